"""Reads. Every id that comes from outside is loaded through ``conversation_get_for_user``.

Sync functions: the consumer calls them through ``database_sync_to_async``.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from conversations.errors import ConversationNotFound
from conversations.models import Conversation, Message
from providers.models import ChatModel


def conversation_get_for_user(
    *,
    user: AbstractBaseUser | AnonymousUser,
    conversation_id: UUID | str,
    lock_owner: bool = False,
) -> Conversation:
    """The user's conversation, or ConversationNotFound (also for someone else's id).

    ``lock_owner``, inside a transaction: also lock the owner's row until it ends, in the same
    round trip (see conversations.limits.lock_sender)."""
    if not user.is_authenticated:
        raise ConversationNotFound
    conversations = Conversation.objects.select_related("model", "model__provider")
    if lock_owner:
        conversations = conversations.select_related("owner").select_for_update(of=("owner",))
    try:
        return conversations.get(id=conversation_id, owner=user)
    except (Conversation.DoesNotExist, ValidationError, ValueError):
        raise ConversationNotFound from None


@dataclass(frozen=True)
class SidebarPage:
    conversations: list[Conversation]
    next_page: int | None


def sidebar_page(*, user: AbstractBaseUser, page: int = 1) -> SidebarPage:
    size = settings.CHAT_SIDEBAR_PAGE_SIZE
    page = max(page, 1)
    offset = (page - 1) * size
    # One row more than shown tells whether there is a next page without a COUNT(*).
    rows = list(
        Conversation.objects.filter(owner=user)
        .only("id", "title", "updated_at", "created_at")
        .order_by("-updated_at", "-created_at")[offset : offset + size + 1]
    )
    has_more = len(rows) > size
    return SidebarPage(conversations=rows[:size], next_page=page + 1 if has_more else None)


def path_ids(*, conversation: Conversation) -> list[int]:
    """Ids of the messages on the branch shown, oldest first, without loading any text."""
    leaf_id = conversation.current_leaf_id
    if leaf_id is None:
        return []
    parents = dict(Message.objects.filter(conversation=conversation).values_list("id", "parent_id"))
    path: list[int] = []
    node: int | None = leaf_id
    while node is not None and node in parents:
        path.append(node)
        node = parents[node]
    path.reverse()
    return path


def messages_on_path(*, conversation: Conversation) -> list[Message]:
    ids = path_ids(conversation=conversation)
    by_id = Message.objects.in_bulk(ids)
    return [by_id[i] for i in ids if i in by_id]


def chat_models_enabled() -> QuerySet[ChatModel]:
    return ChatModel.objects.filter(enabled=True, provider__enabled=True).select_related("provider")


def chat_model_default() -> ChatModel | None:
    return chat_models_enabled().order_by("-is_default", "provider__name", "name").first()


def streaming_reply(*, conversation: Conversation) -> Message | None:
    return (
        Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING)
        .order_by("-id")
        .first()
    )


def finished_reply(*, conversation: Conversation, message_id: int) -> Message | None:
    """A reply of this conversation that is no longer streaming (None for any other id)."""
    replies = Message.objects.filter(
        conversation=conversation, id=message_id, role=Message.Role.ASSISTANT
    )
    return replies.exclude(status=Message.Status.STREAMING).first()
