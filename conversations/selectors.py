"""Reads. Every id that comes from outside is loaded through ``conversation_get_for_user``.

Sync functions: the consumer calls them through ``database_sync_to_async``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from conversations.errors import ConversationNotFound
from conversations.models import Conversation, Message, NewChatSettings, ReplyContext, Summary
from providers.models import ChatModel


def conversation_get_for_user(
    *, user: AbstractBaseUser | AnonymousUser, conversation_id: UUID | str
) -> Conversation:
    """The user's conversation, or ConversationNotFound (also for someone else's id)."""
    if not user.is_authenticated:
        raise ConversationNotFound
    try:
        return Conversation.objects.select_related("model", "model__provider").get(
            id=conversation_id, owner=user
        )
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
    # sent_context: a reply's note (e.g. summarizing failed) is shown on it; joined, not N+1.
    by_id = Message.objects.select_related("sent_context").in_bulk(ids)
    return [by_id[i] for i in ids if i in by_id]


def chat_models_enabled() -> QuerySet[ChatModel]:
    return ChatModel.objects.filter(enabled=True, provider__enabled=True).select_related("provider")


def chat_model_default() -> ChatModel | None:
    return chat_models_enabled().order_by("-is_default", "provider__name", "name").first()


def new_chat_settings(*, user: AbstractBaseUser) -> NewChatSettings | None:
    return NewChatSettings.objects.select_related("model__provider").filter(user=user).first()


def chat_model_for_new_chat(
    *, user: AbstractBaseUser, settings_row: NewChatSettings | None = None
) -> ChatModel | None:
    """The model a new chat starts with: the one the user picked last, while it is available,
    otherwise the default."""
    row = settings_row if settings_row is not None else new_chat_settings(user=user)
    if row is not None and row.model is not None and row.model.is_available:
        return row.model
    return chat_model_default()


@dataclass(frozen=True)
class ModelGroup:
    provider: str
    models: list[ChatModel]


def chat_model_groups(available: QuerySet[ChatModel] | None = None) -> list[ModelGroup]:
    """The models users may pick, grouped by provider, for the picker (``available``: those of
    the user's team, teams.selectors.models_available; default every enabled model)."""
    groups: dict[int, ModelGroup] = {}
    models = chat_models_enabled() if available is None else available
    for chat_model in models.order_by("provider__name", "name"):
        group = groups.setdefault(chat_model.provider_id, ModelGroup(chat_model.provider.name, []))
        group.models.append(chat_model)
    for group in groups.values():
        group.models.sort(key=lambda chat_model: chat_model.label.lower())
    return list(groups.values())


def streaming_reply(*, conversation: Conversation) -> Message | None:
    return (
        Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING)
        .order_by("-id")
        .first()
    )


# --- context management (conversations/history.py) --------------------------------------------


def summary_source(
    *, summary_id: int | None, message_ids: Sequence[int]
) -> tuple[str | None, list[tuple[str, str]]]:
    """What a summary call folds together: the old summary's text and the messages' texts."""
    previous = None
    if summary_id is not None:
        previous = Summary.objects.filter(id=summary_id).values_list("content", flat=True).first()
    rows = {
        row[0]: (row[1], row[2])
        for row in Message.objects.filter(id__in=message_ids).values_list("id", "role", "content")
    }
    return previous, [rows[i] for i in message_ids if i in rows]


@dataclass(frozen=True)
class ContextDivider:
    """Where the model's view of the conversation began for the latest reply."""

    before_id: int
    earlier: int
    summarized: int
    summary: Summary | None

    @property
    def not_sent(self) -> int:
        return self.earlier - self.summarized


def context_divider(*, reply_id: int | None) -> ContextDivider | None:
    """The divider for this reply's request, or None when it was sent the whole branch."""
    if reply_id is None:
        return None
    record = ReplyContext.objects.select_related("summary").filter(reply_id=reply_id).first()
    if record is None or record.earlier_count == 0:
        return None
    return ContextDivider(
        before_id=record.first_sent_id,
        earlier=record.earlier_count,
        summarized=min(record.summarized_count, record.earlier_count),
        summary=record.summary,
    )


def latest_reply_id(messages: Sequence[Message]) -> int | None:
    for message in reversed(messages):
        if message.role == Message.Role.ASSISTANT:
            return message.id
    return None


def context_strategy_default(*, conversation: Conversation) -> str:
    """The strategy a conversation follows when it has not chosen one."""
    model = conversation.model
    return (model.context_strategy if model else "") or settings.CHAT_CONTEXT_STRATEGY
