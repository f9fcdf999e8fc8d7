"""Every write about shares, and the two ways conversations come into an account from outside:
continuing a shared conversation and importing an export file.

The caller hands in a conversation loaded with ``conversation_get_for_user``: owning it is what
allows creating, updating and revoking its share. Sync functions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, time

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from conversations.errors import ChatError
from conversations.models import Conversation, Message
from conversations.selectors import chat_model_default, chat_models_enabled, path_ids
from conversations.tokens import message_tokens
from providers.models import ChatModel
from sharing import selectors
from sharing.errors import ShareNotFound, SignInRequired
from sharing.models import Share
from sharing.transfer import ConversationData, MessageData

NOTHING_TO_SHARE = (
    "There is nothing to share yet: send a message and wait for the reply, then share."
)


@dataclass(frozen=True)
class ShareSettings:
    visibility: str = Share.Visibility.LINK
    expires_on: date | None = None
    include_system_prompt: bool = False


@dataclass(frozen=True)
class SharedConversation:
    """What a shared page shows: nothing about the owner, the provider or internal ids."""

    title: str
    shared_at: datetime
    system_prompt: str
    messages: list[Message]
    description: str


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)  # 256 bits
    return token, selectors.token_digest(token)


def _expiry(expires_on: date | None) -> datetime | None:
    """A link expiring "on" a date stops working when that day begins (server time zone)."""
    if expires_on is None:
        return None
    if expires_on <= timezone.localdate():
        raise ChatError("Pick an expiry date after today, or leave it empty.", code="expiry_past")
    return timezone.make_aware(datetime.combine(expires_on, time.min))


def _snapshot(conversation: Conversation) -> list[int]:
    """The branch shown now, without a reply still being written (it would change)."""
    ids = path_ids(conversation=conversation)
    streaming = set(
        Message.objects.filter(id__in=ids, status=Message.Status.STREAMING).values_list(
            "id", flat=True
        )
    )
    snapshot = [i for i in ids if i not in streaming]
    if not snapshot:
        raise ChatError(NOTHING_TO_SHARE, code="nothing_to_share")
    return snapshot


def _visibility(value: str) -> str:
    if value not in Share.Visibility.values:
        raise ChatError("Choose who may open the link.", code="visibility")
    return value


def share_save(*, conversation: Conversation, settings: ShareSettings) -> Share:
    """Create the conversation's link, or update it (same URL) to show the conversation as it is
    now, with these settings."""
    visibility = _visibility(settings.visibility)
    expires_at = _expiry(settings.expires_on)
    snapshot = _snapshot(conversation)
    now = timezone.now()
    fields = {
        "visibility": visibility,
        "expires_at": expires_at,
        "include_system_prompt": settings.include_system_prompt,
        "message_ids": snapshot,
        "updated_at": now,
    }
    if Share.objects.filter(conversation=conversation).update(**fields):
        return Share.objects.get(conversation=conversation)
    token, digest = _new_token()
    try:
        with transaction.atomic():
            return Share.objects.create(
                conversation=conversation,
                token=token,
                token_digest=digest,
                created_at=now,
                **fields,
            )
    except IntegrityError:
        # Created by a request that raced this one (a double click): update that one instead.
        Share.objects.filter(conversation=conversation).update(**fields)
        return Share.objects.get(conversation=conversation)


def share_rotate(*, conversation: Conversation, settings: ShareSettings) -> Share:
    """Revoke the current link and give the share a new one (with these settings, showing the
    conversation as it is now). The old URL answers 404 from the moment this commits."""
    with transaction.atomic():
        share = share_save(conversation=conversation, settings=settings)
        token, digest = _new_token()
        now = timezone.now()
        Share.objects.filter(id=share.id).update(
            token=token, token_digest=digest, views=0, created_at=now, updated_at=now
        )
        share.refresh_from_db()
    return share


def share_revoke(*, conversation: Conversation) -> bool:
    """Delete the conversation's link; False when it had none."""
    deleted, _ = Share.objects.filter(conversation=conversation).delete()
    return bool(deleted)


def share_open(*, token: str, viewer: AbstractBaseUser | AnonymousUser) -> SharedConversation:
    """The snapshot behind a link, counting the view. ShareNotFound or SignInRequired."""
    share = selectors.share_get_by_token(token=token)
    if not selectors.share_viewer_allowed(share=share, user=viewer):
        if not viewer.is_authenticated:
            raise SignInRequired
        raise ShareNotFound
    Share.objects.filter(id=share.id).update(views=F("views") + 1)
    messages = selectors.share_messages(share=share)
    conversation = share.conversation
    return SharedConversation(
        title=conversation.display_title,
        shared_at=share.updated_at,
        system_prompt=conversation.system_prompt if share.include_system_prompt else "",
        messages=messages,
        description=selectors.description_from(messages),
    )


# --- conversations that come from outside ------------------------------------------------------
def _model_named(name: str | None) -> ChatModel | None:
    if name:
        match = chat_models_enabled().filter(name=name).order_by("-is_default", "id").first()
        if match is not None:
            return match
    return chat_model_default()


def _conversation_from(
    *, owner: AbstractBaseUser, data: ConversationData, model: ChatModel | None = None
) -> Conversation:
    """Store one conversation and its message tree. Call inside a transaction."""
    now = timezone.now()
    conversation = Conversation.objects.create(
        owner=owner,
        title=data.title,
        system_prompt=data.system_prompt,
        model=model or _model_named(data.model_name),
        created_at=data.created_at or now,
        updated_at=data.updated_at or data.created_at or now,
    )
    rows = [
        Message(
            conversation=conversation,
            role=m.role,
            content=m.content,
            reasoning=m.reasoning,
            status=m.status,
            finish_reason=m.finish_reason,
            error_kind=m.error_kind,
            error=m.error,
            model_name=m.model_name,
            token_count=(
                m.token_count
                if m.token_count is not None
                else (message_tokens(m.content) if m.content else None)
            ),
            prompt_tokens=m.prompt_tokens,
            completion_tokens=m.completion_tokens,
            usage_estimated=m.usage_estimated,
            created_at=m.created_at or now,
            updated_at=m.updated_at or m.created_at or now,
        )
        for m in data.messages
    ]
    # Rows are inserted in the file's order (parents first), then linked: two statements
    # instead of one per message.
    Message.objects.bulk_create(rows, batch_size=500)
    linked = []
    for row, m in zip(rows, data.messages, strict=True):
        if m.parent is not None:
            row.parent_id = rows[m.parent].id
            linked.append(row)
    Message.objects.bulk_update(linked, ["parent"], batch_size=500)
    if data.current_leaf is not None:
        conversation.current_leaf = rows[data.current_leaf]
        conversation.save(update_fields=["current_leaf"])
    return conversation


def conversations_import(
    *, owner: AbstractBaseUser, conversations: list[ConversationData]
) -> list[Conversation]:
    """Store every parsed conversation as a new one of ``owner``'s, all or none."""
    with transaction.atomic():
        return [_conversation_from(owner=owner, data=data) for data in conversations]


def share_continue(*, token: str, user: AbstractBaseUser) -> Conversation:
    """Copy the shared snapshot into ``user``'s account as a new conversation to chat on."""
    if not user.is_authenticated:
        raise SignInRequired
    share = selectors.share_get_by_token(token=token)
    if not selectors.share_viewer_allowed(share=share, user=user):
        raise ShareNotFound
    source = share.conversation
    model = source.model
    if model is None or not model.enabled or not model.provider.enabled:
        model = chat_model_default()
    messages = selectors.share_messages(share=share)
    now = timezone.now()
    data = ConversationData(
        title=source.title,
        system_prompt=source.system_prompt if share.include_system_prompt else "",
        model_name=None,
        created_at=now,
        updated_at=now,
        # The snapshot is one branch: each copy follows the one before it.
        messages=[
            MessageData(
                parent=index - 1 if index else None,
                role=m.role,
                content=m.content,
                reasoning=m.reasoning,
                status=m.status,
                finish_reason=m.finish_reason,
                error_kind=m.error_kind,
                # Error texts can name the owner's provider; the copy keeps only the kind.
                error="",
                model_name=m.model_name,
                created_at=m.created_at,
                updated_at=m.updated_at,
                token_count=m.token_count,
                prompt_tokens=m.prompt_tokens,
                completion_tokens=m.completion_tokens,
                usage_estimated=m.usage_estimated,
            )
            for index, m in enumerate(messages)
        ],
        current_leaf=len(messages) - 1 if messages else None,
    )
    with transaction.atomic():
        return _conversation_from(owner=user, data=data, model=model)
