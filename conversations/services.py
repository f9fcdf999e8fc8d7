"""Every write and every rule about conversations. Views, the consumer, the admin and management
commands call these; none of them writes to the models directly.

Sync functions: the consumer calls them through ``database_sync_to_async``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations.errors import ChatError
from conversations.history import build_request_context, context_budget
from conversations.limits import limit_refusal, lock_sender, sender_state
from conversations.models import Conversation, Message
from conversations.selectors import chat_model_default, conversation_get_for_user
from conversations.tokens import message_tokens
from providers.client import ChatRequest, ProviderConfig
from providers.events import Usage
from providers.models import ChatModel

logger = logging.getLogger(__name__)

TITLE_WORDS = 8
TITLE_MAX_CHARS = 80

NO_MODEL_MESSAGE = (
    "No model is configured yet. An admin can add a provider in the admin pages "
    "(/admin/), or start the app with OPENAI_BASE_URL, OPENAI_API_KEY and OPENAI_MODEL set."
)
BUSY_MESSAGE = (
    "A reply is still being written in this conversation. Wait for it to finish, or press Stop, "
    "then send again. Your message is still in the box."
)


@dataclass(frozen=True)
class GenerationPlan:
    """Everything a generation task needs, resolved while the database was at hand."""

    conversation_id: UUID
    reply_id: int
    user_id: int
    config: ProviderConfig
    request: ChatRequest
    model_label: str


@dataclass(frozen=True)
class SendOutcome:
    conversation: Conversation
    user_message: Message
    reply: Message
    created_conversation: bool
    # None when the same client message id was already stored: nothing new is started.
    plan: GenerationPlan | None


def title_from_text(text: str) -> str:
    words = text.split()
    title = " ".join(words[:TITLE_WORDS])
    if len(words) > TITLE_WORDS:
        title += "…"
    return title[:TITLE_MAX_CHARS]


def validate_message_content(content: object) -> str:
    if not isinstance(content, str) or not content.strip():
        raise ChatError("Type a message first.", code="empty")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(content) > limit:
        raise ChatError(
            f"This message is {len(content):,} characters long; the limit is {limit:,}. "
            "Nothing was sent: shorten it and try again.",
            code="too_long",
        )
    return content


def conversation_create(*, owner: AbstractBaseUser, model: ChatModel | None = None) -> Conversation:
    return Conversation.objects.create(owner=owner, model=model or chat_model_default())


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    title = " ".join(title.split())[:TITLE_MAX_CHARS]
    if not title:
        raise ChatError("A title cannot be empty.", code="empty_title")
    conversation.title = title
    conversation.save(update_fields=["title"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def _existing_send(
    *, user: AbstractBaseUser, conversation: Conversation | None, client_id: UUID | None
) -> SendOutcome | None:
    """The stored pair of a message sent before with this client id, if any.

    Without a conversation (the first message of a new chat, resent after a reconnect) the
    user's own messages are searched, so a resend never starts a second conversation.
    """
    if client_id is None:
        return None
    messages = Message.objects.filter(client_id=client_id, role=Message.Role.USER)
    if conversation is not None:
        messages = messages.filter(conversation=conversation)
    else:
        messages = messages.filter(conversation__owner=user).select_related("conversation")
    user_message = messages.first()
    if user_message is None:
        return None
    reply = user_message.children.order_by("id").first()
    if reply is None:
        return None
    return SendOutcome(user_message.conversation, user_message, reply, False, None)


def message_send(
    *,
    user: AbstractBaseUser,
    conversation_id: UUID | str | None,
    content: object,
    client_id: UUID | None = None,
) -> SendOutcome:
    """Store the user's message and an empty streaming reply, and plan the upstream call.

    Either both messages are stored and a plan is returned, or ChatError is raised and nothing
    is stored (the browser keeps the draft). A client id seen before returns the stored pair
    with ``plan=None``.
    """
    text = validate_message_content(content)
    created_conversation = conversation_id is None
    conversation = None
    now = timezone.now()
    try:
        with transaction.atomic():
            # The user's row is locked first: their sends are checked one at a time.
            if conversation_id is None:
                lock_sender(user=user)
            else:
                conversation = conversation_get_for_user(
                    user=user, conversation_id=conversation_id, lock_owner=True
                )
            sender = sender_state(
                user=user, conversation=conversation, client_id=client_id, now=now
            )
            # Under the lock: the same message sent twice at once is stored once.
            if sender.resent:
                existing = _existing_send(user=user, conversation=conversation, client_id=client_id)
                if existing is not None:
                    return existing
            refusal = (
                ChatError(BUSY_MESSAGE, code="busy")
                if sender.busy
                else limit_refusal(sender, now=now)
            )
            if refusal is not None:
                # A resend of a message stored already is answered with it, never refused.
                if client_id is not None and (
                    existing := _existing_send(
                        user=user, conversation=conversation, client_id=client_id
                    )
                ):
                    return existing
                raise refusal
            if conversation is None:
                model = chat_model_default()
                if model is None:
                    raise ChatError(NO_MODEL_MESSAGE, code="no_model")
                conversation = Conversation(
                    owner=user, model=model, title=title_from_text(text), created_at=now
                )
                conversation.save(force_insert=True)
            else:
                model = conversation.model or chat_model_default()
                if model is None or not model.enabled or not model.provider.enabled:
                    raise ChatError(NO_MODEL_MESSAGE, code="no_model")
            user_message = Message.objects.create(
                conversation=conversation,
                parent_id=conversation.current_leaf_id,
                role=Message.Role.USER,
                content=text,
                token_count=message_tokens(text),
                client_id=client_id,
                created_at=now,
                updated_at=now,
            )
            # Raises ContextTooLarge before anything is committed.
            context = build_request_context(
                conversation=conversation, newest=user_message, model=model
            )
            reply = Message.objects.create(
                conversation=conversation,
                parent=user_message,
                role=Message.Role.ASSISTANT,
                status=Message.Status.STREAMING,
                model=model,
                model_name=model.label,
                created_at=now,
                updated_at=now,
            )
            conversation.current_leaf = reply
            conversation.updated_at = now
            update = ["current_leaf", "updated_at"]
            if not conversation.title:
                conversation.title = title_from_text(text)
                update.append("title")
            if conversation.model_id is None:
                conversation.model = model
                update.append("model")
            conversation.save(update_fields=update)
    except IntegrityError:
        # Two sends of the same message raced: the other one won; answer with its pair.
        if existing := _existing_send(
            user=user,
            conversation=None if created_conversation else conversation,
            client_id=client_id,
        ):
            return existing
        raise ChatError(BUSY_MESSAGE, code="busy") from None

    _, reserved = context_budget(model)
    plan = GenerationPlan(
        conversation_id=conversation.id,
        reply_id=reply.id,
        user_id=user.pk,
        config=model.provider.to_config(),
        request=ChatRequest(
            model=model.name, messages=context.messages, params={"max_tokens": reserved}
        ),
        model_label=model.label,
    )
    return SendOutcome(conversation, user_message, reply, created_conversation, plan)


def reply_flush(*, reply_id: int, content: str, reasoning: str) -> None:
    """Save a streaming reply's text so far (at most about once a second)."""
    Message.objects.filter(id=reply_id, status=Message.Status.STREAMING).update(
        content=content, reasoning=reasoning, updated_at=timezone.now()
    )


def reply_finish(
    *,
    reply_id: int,
    content: str,
    reasoning: str,
    status: str,
    finish_reason: str = "",
    error_kind: str = "",
    error: str = "",
    usage: Usage | None = None,
) -> Message:
    """Close a reply with its final text and status; a reply already closed is left as it is."""
    fields = {
        "content": content,
        "reasoning": reasoning,
        "status": status,
        "finish_reason": finish_reason,
        "error_kind": error_kind,
        "error": error,
        "token_count": message_tokens(content) if content else None,
        "updated_at": timezone.now(),
    }
    if usage is not None:
        fields["prompt_tokens"] = usage.prompt_tokens
        fields["completion_tokens"] = usage.completion_tokens
        fields["usage_estimated"] = False
    elif content:
        fields["completion_tokens"] = fields["token_count"]
        fields["usage_estimated"] = True
    Message.objects.filter(id=reply_id, status=Message.Status.STREAMING).update(**fields)
    return Message.objects.get(id=reply_id)


def replies_mark_interrupted(*, older_than: timedelta) -> list[Message]:
    """Mark replies left "streaming" by a process that died as interrupted, keeping their text.

    A live generation touches its row at least every few seconds, so only replies untouched for
    ``older_than`` are taken: safe to run from any process, at start-up and periodically.
    Returns the replies it closed.
    """
    cutoff = timezone.now() - older_than
    stale = list(
        Message.objects.filter(status=Message.Status.STREAMING, updated_at__lt=cutoff).values_list(
            "id", flat=True
        )
    )
    if not stale:
        return []
    Message.objects.filter(
        id__in=stale, status=Message.Status.STREAMING, updated_at__lt=cutoff
    ).update(
        status=Message.Status.INTERRUPTED,
        error_kind="interrupted",
        error="The server stopped while this reply was being written.",
        updated_at=timezone.now(),
    )
    return list(Message.objects.filter(id__in=stale, status=Message.Status.INTERRUPTED))
