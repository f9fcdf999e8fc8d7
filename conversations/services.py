"""Every write and every rule about conversations. Views, the consumer, the admin and management
commands call these; none of them writes to the models directly.

Sync functions: the consumer calls them through ``database_sync_to_async``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from conversations.errors import ChatError
from conversations.history import (
    RATIO_DECAY,
    ContextTooLarge,
    RequestContext,
    SummaryStep,
    SummaryWork,
    build_continue_context,
    build_request_context,
    context_budget,
    conversation_budget,
    plan_request,
    reply_token_limit,
)
from conversations.limits import lock_sender, replies_refusal
from conversations.models import (
    Conversation,
    Message,
    NewChatSettings,
    ReplyContext,
    Summary,
    TokenCalibration,
)
from conversations.selectors import (
    chat_model_for_new_chat,
    chat_models_enabled,
    conversation_get_for_user,
    message_get_in,
    new_chat_settings,
    newest_leaf_under,
)
from conversations.summaries import SummaryResult
from conversations.titles import TitlePlan
from conversations.tokens import message_tokens
from conversations.usage import UpstreamCall, record_upstream_call
from providers.client import ChatRequest, ProviderConfig
from providers.events import Usage
from providers.models import ChatModel, ContextStrategy
from providers.params import (
    ACCEPTABLE_PARAMS,
    JSON_MODE,
    ParamError,
    clean_params,
    request_params,
)
from teams.models import Team
from teams.selectors import (
    model_default_for,
    model_is_available,
    models_available,
    team_default_for,
    team_for_send,
)
from usage.limits import limits_admit
from usage.meter import CallContext, UsageCall
from usage.services import (
    call_context,
    reply_call_id,
    usage_record_call,
    usage_record_interrupted_replies,
    usage_reserve,
)

logger = logging.getLogger(__name__)

TITLE_WORDS = 8
TITLE_MAX_CHARS = 80

NO_MODEL_MESSAGE = (
    "No model is configured yet. An admin can add a provider in the admin pages "
    "(/admin/), or start the app with OPENAI_BASE_URL, OPENAI_API_KEY and OPENAI_MODEL set."
)
MODEL_UNAVAILABLE_MESSAGE = (
    "The model of this conversation, {label}, has been turned off by an admin. Pick another "
    "model in the conversation settings, then send again. Your message is still in the box."
)
BUSY_MESSAGE = (
    "A reply is still being written in this conversation. Wait for it to finish, or press Stop, "
    "then send again. Your message is still in the box."
)

REPLY_BUSY_MESSAGE = (
    "A reply is still being written in this conversation. Wait for it to finish, or press Stop, "
    "then try again."
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
    # Summaries to write before the request can be built (then ``request`` has no messages yet).
    summarize: SummaryWork | None = None
    # Our estimate of the request's size and its model, to learn from the usage reported.
    estimated_prompt_tokens: int = 0
    chat_model_id: int | None = None
    # Who and what the call is charged to (usage.meter); None only for plans made elsewhere.
    usage: CallContext | None = None
    # Set when this reply completes the conversation's first exchange and a title is wanted.
    title: TitlePlan | None = None


@dataclass(frozen=True)
class SendOutcome:
    conversation: Conversation
    user_message: Message
    reply: Message
    created_conversation: bool
    # None when the same client message id was already stored: nothing new is started.
    plan: GenerationPlan | None
    # True when the new message does not simply follow the branch that was shown (an edit, or
    # a send from a page showing another branch): pages must redraw the branch.
    branched: bool = False


@dataclass(frozen=True)
class ReplyOutcome:
    """A new reply (regenerate, retry, continue): always a new branch of the tree."""

    conversation: Conversation
    reply: Message
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
    return Conversation.objects.create(
        owner=owner, model=model or chat_model_for_new_chat(user=owner)
    )


# -- model, system prompt and parameters ----------------------------------------------------


class SettingsInvalid(ChatError):
    """Settings that cannot be saved; ``errors`` maps form field names to plain words."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(" ".join(errors.values()), code="invalid_settings")
        self.errors = errors


@dataclass(frozen=True)
class ChatSettings:
    model: ChatModel
    system_prompt: str
    params: dict[str, object]


def chat_settings_validate(
    *,
    model_id: object,
    system_prompt: object,
    params: dict[str, object],
    available: QuerySet[ChatModel] | None = None,
) -> ChatSettings:
    """Check a model choice, a system prompt and parameters together; SettingsInvalid if not.

    Parameters the model does not accept are dropped, not refused: the settings panel shows
    only the model's own, and switching models keeps what both accept.
    """
    errors: dict[str, str] = {}
    model = None
    if model_id not in (None, ""):
        try:
            # ``available``: the models of the chat's team (teams.selectors.models_available).
            choices = chat_models_enabled() if available is None else available
            model = choices.filter(pk=int(str(model_id))).first()
        except ValueError:
            model = None
    if model is None:
        errors["model"] = "Pick one of the available models."
    if not isinstance(system_prompt, str):
        system_prompt = ""
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(system_prompt) > limit:
        errors["system_prompt"] = (
            f"The system prompt is {len(system_prompt):,} characters long; the limit is {limit:,}."
        )
    try:
        cleaned = clean_params(params)
    except ParamError as exc:
        errors.update(exc.errors)
        cleaned = {}
    if model is not None:
        cleaned = {
            key: value
            for key, value in cleaned.items()
            if (key not in ACCEPTABLE_PARAMS or key in model.accepted_params)
            and (key != JSON_MODE or model.accepts_json_mode)
        }
        max_tokens = cleaned.get("max_tokens")
        top = reply_token_limit(model)
        if isinstance(max_tokens, int) and max_tokens > top:
            errors["max_tokens"] = f"{model.label} writes at most {top:,} tokens per reply."
        budget, _ = context_budget(model, max_tokens if isinstance(max_tokens, int) else None)
        needed = message_tokens(system_prompt) if system_prompt else 0
        if "system_prompt" not in errors and needed > budget:
            errors["system_prompt"] = (
                f"This system prompt is about {needed:,} tokens, but {model.label} accepts at "
                f"most {budget:,} per request. Shorten it."
            )
    if errors:
        raise SettingsInvalid(errors)
    assert model is not None
    return ChatSettings(model=model, system_prompt=system_prompt, params=cleaned)


def _remember_model(*, user: AbstractBaseUser, model: ChatModel) -> None:
    # New chats follow the model the user picked last.
    NewChatSettings.objects.update_or_create(
        user=user, defaults={"model": model, "updated_at": timezone.now()}
    )


def conversation_settings_update(
    *,
    conversation: Conversation,
    model_id: object,
    system_prompt: object,
    params: dict[str, object],
) -> Conversation:
    """Save a conversation's model, system prompt and parameters, all or nothing."""
    team = team_for_send(
        user=conversation.owner, requested=None, current_team_id=conversation.team_id
    )
    chosen = chat_settings_validate(
        model_id=model_id,
        system_prompt=system_prompt,
        params=params,
        available=models_available(team=team),
    )
    with transaction.atomic():
        conversation.model = chosen.model
        conversation.system_prompt = chosen.system_prompt
        conversation.params = chosen.params
        # Not updated_at: changing settings should not move the chat to the top of the list.
        conversation.save(update_fields=["model", "system_prompt", "params"])
        _remember_model(user=conversation.owner, model=chosen.model)
    return conversation


def new_chat_settings_update(
    *,
    user: AbstractBaseUser,
    model_id: object,
    system_prompt: object,
    params: dict[str, object],
) -> NewChatSettings:
    """Save what the user set on the new-chat page; the first message takes it along."""
    chosen = chat_settings_validate(
        model_id=model_id,
        system_prompt=system_prompt,
        params=params,
        available=models_available(team=team_default_for(user=user)),
    )
    row, _ = NewChatSettings.objects.update_or_create(
        user=user,
        defaults={
            "model": chosen.model,
            "system_prompt": chosen.system_prompt,
            "params": chosen.params,
            "updated_at": timezone.now(),
        },
    )
    return row


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    title = " ".join(title.split())[:TITLE_MAX_CHARS]
    if not title:
        raise ChatError("A title cannot be empty.", code="empty_title")
    conversation.title = title
    # A title the user chose is never replaced by a generated one.
    conversation.title_source = Conversation.TitleSource.USER
    conversation.save(update_fields=["title", "title_source"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def conversation_set_pinned(*, conversation: Conversation, pinned: bool) -> Conversation:
    conversation.pinned = pinned
    conversation.save(update_fields=["pinned"])
    return conversation


def conversation_set_archived(*, conversation: Conversation, archived: bool) -> Conversation:
    """Archived conversations leave the sidebar; they stay readable, searchable and usable."""
    conversation.archived = archived
    conversation.save(update_fields=["archived"])
    return conversation


def conversation_switch_branch(
    *, user: AbstractBaseUser, conversation_id: UUID | str, message_id: object
) -> Conversation:
    """Show the branch through ``message_id``: the newest leaf under it becomes current."""
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    message = message_get_in(conversation=conversation, message_id=message_id)
    conversation.current_leaf_id = newest_leaf_under(message_id=message.id)
    conversation.save(update_fields=["current_leaf"])
    return conversation


def conversation_title_generated(
    *,
    conversation_id: UUID,
    user_id: int,
    title: str,
    chat_model_id: int | None,
    model_name: str,
    prompt_tokens: int,
    completion_tokens: int,
    estimated: bool,
    call: UsageCall | None = None,
) -> Conversation | None:
    """Keep the usage of a title call and, unless the user set a title meanwhile, the title.

    ``call`` is the call's metering (usage.meter), recorded in the same transaction.
    Returns the conversation when its title changed, else None.
    """
    with transaction.atomic():
        if call is not None:
            usage_record_call(call=call)
        Conversation.objects.filter(id=conversation_id).update(
            title_prompt_tokens=prompt_tokens,
            title_completion_tokens=completion_tokens,
            title_usage_estimated=estimated,
        )
        changed = bool(title) and bool(
            Conversation.objects.filter(
                id=conversation_id, title_source=Conversation.TitleSource.WORDS
            ).update(title=title[:TITLE_MAX_CHARS], title_source=Conversation.TitleSource.MODEL)
        )
        record_upstream_call(
            UpstreamCall(
                purpose="title",
                user_id=user_id,
                conversation_id=conversation_id,
                message_id=None,
                chat_model_id=chat_model_id,
                model_name=model_name,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                estimated=estimated,
            )
        )
    if not changed:
        return None
    return Conversation.objects.filter(id=conversation_id).first()


def _existing_send(
    conversation: Conversation | None, client_id: UUID, *, user: AbstractBaseUser | None = None
) -> SendOutcome | None:
    """The stored pair of a message sent before with this client id, if any.

    Without a conversation (the first message of a new chat, resent after a reconnect) the
    ``user``'s own messages are searched, so a resend never starts a second conversation.
    """
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


def _existing_reply(conversation: Conversation, client_id: UUID | None) -> ReplyOutcome | None:
    if client_id is None:
        return None
    reply = Message.objects.filter(
        conversation=conversation, client_id=client_id, role=Message.Role.ASSISTANT
    ).first()
    return None if reply is None else ReplyOutcome(conversation, reply, None)


def _usable_model(
    conversation: Conversation, user: AbstractBaseUser, team: object = None
) -> tuple[ChatModel, Team | None]:
    """The model a new reply in ``conversation`` uses and the team it is charged to (``team``
    as requested by the page, else the conversation's); refused when the team may not use it."""
    if conversation.model is not None and not conversation.model.is_available:
        raise ChatError(
            MODEL_UNAVAILABLE_MESSAGE.format(label=conversation.model.label),
            code="model_unavailable",
        )
    charged = team_for_send(user=user, requested=team, current_team_id=conversation.team_id)
    model = conversation.model or model_default_for(team=charged)
    if model is None:
        raise ChatError(NO_MODEL_MESSAGE, code="no_model")
    if not model_is_available(model=model, team=charged):
        raise ChatError(_model_unavailable_message(model, charged), code="model_unavailable")
    return model, charged


def _meter_call(
    *,
    user: AbstractBaseUser,
    conversation: Conversation,
    charged: Team | None,
    reply: Message,
    model: ChatModel,
    context: RequestContext | None,
) -> CallContext:
    """In the transaction that stores ``reply``: charge the conversation to ``charged`` and
    reserve the call's largest cost, so concurrent sends cannot overrun a budget together."""
    if conversation.team_id != (charged.pk if charged else None):
        conversation.team = charged
        conversation.save(update_fields=["team"])
    prompt_budget, reserved = conversation_budget(conversation=conversation, model=model)
    usage = call_context(
        call_id=reply_call_id(reply.id),
        kind="reply",
        user=user,
        team=charged,
        conversation_id=conversation.id,
        model=model,
        # Before summarizing, the request is not built yet: reserve its largest size.
        estimated_prompt_tokens=(
            context.estimated_prompt_tokens if context is not None else prompt_budget
        ),
    )
    usage_reserve(context=usage, max_completion_tokens=reserved)
    return usage


def _plan(
    *,
    conversation: Conversation,
    reply: Message,
    user: AbstractBaseUser,
    model: ChatModel,
    context: RequestContext | None,
    question: Message | None,
    work: SummaryWork | None = None,
    usage: CallContext | None = None,
) -> GenerationPlan:
    """The generation's plan: the request (or the summaries to write first), and the title."""
    # The same reserve the history budget left room for, so prompt + reply fit the window.
    _, reserved = conversation_budget(conversation=conversation, model=model)
    params = request_params(
        defaults=model.default_params or {},
        chosen=conversation.params or {},
        accepted=model.accepted_params or (),
        json_mode_allowed=model.accepts_json_mode,
        max_tokens=reserved,
        max_tokens_key=model.max_tokens_param,
    )
    config = model.provider.to_config()
    title = None
    if (
        settings.CHAT_GENERATED_TITLES
        and question is not None
        and question.parent_id is None
        and conversation.title_source == Conversation.TitleSource.WORDS
    ):
        title = TitlePlan(
            config=config, model=model.name, chat_model_id=model.pk, question=question.content
        )
    return GenerationPlan(
        conversation_id=conversation.id,
        reply_id=reply.id,
        user_id=user.pk,
        config=config,
        request=ChatRequest(
            model=model.name,
            messages=context.messages if context is not None else [],
            params=params,
        ),
        model_label=model.label,
        summarize=work,
        estimated_prompt_tokens=context.estimated_prompt_tokens if context is not None else 0,
        chat_model_id=model.id,
        usage=usage,
        title=title,
    )


def _new_reply(
    *,
    conversation: Conversation,
    parent: Message,
    model: ChatModel,
    now: datetime,
    client_id: UUID | None = None,
) -> Message:
    """An empty streaming reply under ``parent``, made the shown leaf. In a transaction."""
    reply = Message.objects.create(
        conversation=conversation,
        parent=parent,
        depth=parent.depth + 1,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=model,
        model_name=model.label,
        client_id=client_id,
        created_at=now,
        updated_at=now,
    )
    conversation.current_leaf = reply
    conversation.updated_at = now
    update = ["current_leaf", "updated_at"]
    if conversation.model_id is None:
        conversation.model = model
        update.append("model")
    conversation.save(update_fields=update)
    return reply


def message_send(
    *,
    user: AbstractBaseUser,
    conversation_id: UUID | str | None,
    content: object,
    client_id: UUID | None = None,
    parent_id: object = None,
    team: object = None,
) -> SendOutcome:
    """Store the user's message and an empty streaming reply, and plan the upstream call.

    The message follows ``parent_id`` (the last message of the branch the page shows) or, when
    none is given, the conversation's current leaf. Either both messages are stored and a plan
    is returned, or ChatError is raised and nothing is stored (the browser keeps the draft). A
    client id seen before returns the stored pair with ``plan=None``. ``team`` is the id of the
    team the user picked to charge (default: the conversation's, else their first team); limits
    are checked before anything is stored.
    """
    text = validate_message_content(content)
    if conversation_id is None:
        if client_id is not None and (existing := _existing_send(None, client_id, user=user)):
            return existing
        charged = team_for_send(user=user, requested=team, current_team_id=None)
        draft = new_chat_settings(user=user)
        model = chat_model_for_new_chat(user=user, settings_row=draft)
        if model is not None and not model_is_available(model=model, team=charged):
            # The model picked last is not one this team may use: the team's default instead.
            model = model_default_for(team=charged)
        if model is None:
            raise ChatError(_no_model_message(charged), code="no_model")
        conversation = Conversation(
            owner=user,
            model=model,
            team=charged,
            system_prompt=draft.system_prompt if draft else "",
            params=dict(draft.params) if draft else {},
        )
        return _send(
            user,
            conversation,
            text,
            client_id,
            None,
            model=model,
            charged=charged,
            created=True,
            draft=draft,
        )
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    if client_id is not None and (existing := _existing_send(conversation, client_id)):
        return existing
    model, charged = _usable_model(conversation, user, team)
    parent = conversation.current_leaf_id
    if parent_id is not None:
        parent = message_get_in(conversation=conversation, message_id=parent_id).id
    return _send(user, conversation, text, client_id, parent, model=model, charged=charged)


def message_edit(
    *,
    user: AbstractBaseUser,
    conversation_id: UUID | str,
    message_id: object,
    content: object,
    client_id: UUID | None = None,
    team: object = None,
) -> SendOutcome:
    """Send an edited version of one of the user's messages: a new message beside it (same
    parent) with a new reply. The original and everything under it stay, one branch away."""
    text = validate_message_content(content)
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    if client_id is not None and (existing := _existing_send(conversation, client_id)):
        return existing
    original = message_get_in(conversation=conversation, message_id=message_id)
    if original.role != Message.Role.USER:
        raise ChatError("Only your own messages can be edited.", code="not_editable")
    model, charged = _usable_model(conversation, user, team)
    return _send(
        user,
        conversation,
        text,
        client_id,
        original.parent_id,
        model=model,
        charged=charged,
        edit=True,
    )


def _send(
    user: AbstractBaseUser,
    conversation: Conversation,
    text: str,
    client_id: UUID | None,
    parent_id: int | None,
    *,
    model: ChatModel,
    charged: Team | None,
    created: bool = False,
    edit: bool = False,
    draft: NewChatSettings | None = None,
) -> SendOutcome:
    now = timezone.now()
    branched = edit or (not created and parent_id != conversation.current_leaf_id)
    try:
        with transaction.atomic():
            # The user's row first (then usage's rows, in limits_admit): this user's sends are
            # checked one at a time, from any process.
            lock_sender(user=user)
            # Under the lock: the same message sent twice at once is stored once, and a resend
            # is answered with the stored pair, never refused as busy or over a limit.
            if client_id is not None and (
                existing := _existing_send(None if created else conversation, client_id, user=user)
            ):
                return existing
            # Then, before anything is stored: budgets and rates (LimitReached is a ChatError
            # and rolls everything back), and replies generating at once.
            limits_admit(user=user, team=charged, now=now)
            busy_in = None if created else conversation.pk
            if refusal := replies_refusal(user=user, conversation_id=busy_in):
                raise refusal
            if created:
                conversation.title = title_from_text(text)
                conversation.created_at = conversation.updated_at = now
                conversation.save(force_insert=True)
                if draft is not None and (draft.system_prompt or draft.params):
                    # The new chat took the draft along; the next one starts afresh.
                    NewChatSettings.objects.filter(pk=draft.pk).update(system_prompt="", params={})
            user_message = Message.objects.create(
                conversation=conversation,
                parent_id=parent_id,
                role=Message.Role.USER,
                content=text,
                token_count=message_tokens(text),
                client_id=client_id,
                created_at=now,
                updated_at=now,
            )
            # Raises ContextTooLarge before anything is committed.
            context_plan = plan_request(conversation=conversation, newest=user_message, model=model)
            reply = _new_reply(conversation=conversation, parent=user_message, model=model, now=now)
            if context_plan.context is not None:
                _reply_context_store(reply_id=reply.id, context=context_plan.context)
            if not conversation.title:
                conversation.title = title_from_text(text)
                conversation.save(update_fields=["title"])
            usage = _meter_call(
                user=user,
                conversation=conversation,
                charged=charged,
                reply=reply,
                model=model,
                context=context_plan.context,
            )
    except IntegrityError:
        if client_id is not None:
            # Two sends of the same message raced: the other one won; answer with its pair.
            existing = _existing_send(None if created else conversation, client_id, user=user)
            if existing is not None:
                return existing
        raise ChatError(BUSY_MESSAGE, code="busy") from None

    plan = _plan(
        conversation=conversation,
        reply=reply,
        user=user,
        model=model,
        context=context_plan.context,
        work=context_plan.work,
        question=user_message,
        usage=usage,
    )
    return SendOutcome(conversation, user_message, reply, created, plan, branched)


def message_regenerate(
    *,
    user: AbstractBaseUser,
    conversation_id: UUID | str,
    message_id: object,
    client_id: UUID | None = None,
    team: object = None,
) -> ReplyOutcome:
    """A new reply beside ``message_id`` (same parent), for regenerate and retry.

    The reply it replaces stays, one branch away. Regenerating a continuation writes another
    continuation of the same reply.
    """
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    if existing := _existing_reply(conversation, client_id):
        return existing
    target = message_get_in(conversation=conversation, message_id=message_id)
    if target.role != Message.Role.ASSISTANT or target.parent_id is None:
        raise ChatError("Only a reply can be regenerated.", code="not_regenerable")
    parent = Message.objects.get(id=target.parent_id)
    return _reply_under(user, conversation, parent, client_id, team)


def message_continue(
    *,
    user: AbstractBaseUser,
    conversation_id: UUID | str,
    message_id: object,
    client_id: UUID | None = None,
    team: object = None,
) -> ReplyOutcome:
    """Continue a reply cut off by the length limit, as a new reply under it.

    The cut reply is kept as it is (nothing stored changes); pages show the continuation
    joined to it, and later requests send the two as one assistant message.
    """
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    if existing := _existing_reply(conversation, client_id):
        return existing
    target = message_get_in(conversation=conversation, message_id=message_id)
    if (
        target.role != Message.Role.ASSISTANT
        or target.status != Message.Status.COMPLETE
        or target.finish_reason != "length"
    ):
        raise ChatError(
            "Only a reply cut off by the length limit can be continued.", code="not_continuable"
        )
    return _reply_under(user, conversation, target, client_id, team)


def _reply_under(
    user: AbstractBaseUser,
    conversation: Conversation,
    parent: Message,
    client_id: UUID | None,
    team: object = None,
) -> ReplyOutcome:
    model, charged = _usable_model(conversation, user, team)
    now = timezone.now()
    try:
        with transaction.atomic():
            # As for a send: the user's row, a resend answered, then limits, before anything is
            # stored (see _send).
            lock_sender(user=user)
            if existing := _existing_reply(conversation, client_id):
                return existing
            limits_admit(user=user, team=charged, now=now)
            if refusal := replies_refusal(user=user, conversation_id=conversation.pk):
                raise refusal
            work = None
            if parent.role == Message.Role.USER:
                question = parent
                # As for a new message: summaries are written first when the history needs them.
                context_plan = plan_request(conversation=conversation, newest=parent, model=model)
                context, work = context_plan.context, context_plan.work
            else:
                question = None
                context = build_continue_context(
                    conversation=conversation, reply=parent, model=model
                )
            reply = _new_reply(
                conversation=conversation, parent=parent, model=model, now=now, client_id=client_id
            )
            if context is not None:
                _reply_context_store(reply_id=reply.id, context=context)
            usage = _meter_call(
                user=user,
                conversation=conversation,
                charged=charged,
                reply=reply,
                model=model,
                context=context,
            )
    except IntegrityError:
        if existing := _existing_reply(conversation, client_id):
            return existing
        raise ChatError(REPLY_BUSY_MESSAGE, code="busy") from None
    plan = _plan(
        conversation=conversation,
        reply=reply,
        user=user,
        model=model,
        context=context,
        work=work,
        question=question,
        usage=usage,
    )
    return ReplyOutcome(conversation, reply, plan)


def conversation_set_context_strategy(*, conversation: Conversation, strategy: object) -> None:
    """Choose what happens to this conversation's turns that no longer fit ("" = default)."""
    if strategy not in ("", *ContextStrategy.values):
        raise ChatError("Choose one of the options offered.", code="bad_strategy")
    conversation.context_strategy = strategy
    conversation.save(update_fields=["context_strategy"])


def _reply_context_store(*, reply_id: int, context: RequestContext) -> None:
    ReplyContext.objects.create(
        reply_id=reply_id,
        strategy=context.strategy,
        first_sent_id=context.first_sent_id,
        summary_id=context.summary_id,
        earlier_count=context.earlier_count,
        summarized_count=context.summarized_count,
        note=context.note,
        estimated_prompt_tokens=context.estimated_prompt_tokens,
        budget=context.budget,
    )


def summary_store(
    *,
    work: SummaryWork,
    step: SummaryStep,
    previous_id: int | None,
    result: SummaryResult,
    call: UsageCall | None = None,
) -> int:
    """Store a summary a model wrote; returns its id.

    Every summary call that produced a summary is recorded here and only here, with the usage
    the provider reported (or our estimate): usage accounting and limits hook in at this point,
    as they do for replies in reply_finish.
    """
    usage = result.usage
    reported = usage is not None and usage.prompt_tokens is not None
    if call is not None:
        # The call's usage record commits with the summary, exactly once (usage.services).
        with transaction.atomic():
            summary_id = summary_store(
                work=work, step=step, previous_id=previous_id, result=result, call=None
            )
            usage_record_call(call=call)
        return summary_id
    summary = Summary.objects.create(
        conversation_id=work.conversation_id,
        previous_id=previous_id,
        first_message_id=work.first_message_id,
        last_message_id=step.last_id,
        message_count=step.last_depth + 1,
        content=result.text,
        token_count=message_tokens(result.text),
        model_id=work.summarizer_id,
        model_name=work.summarizer_label,
        prompt_tokens=usage.prompt_tokens if reported else result.estimated_prompt_tokens,
        completion_tokens=(
            usage.completion_tokens
            if reported and usage.completion_tokens is not None
            else message_tokens(result.text)
        ),
        usage_estimated=not reported,
    )
    if reported:
        token_ratio_observe(
            chat_model_id=work.summarizer_id,
            estimated=result.estimated_prompt_tokens,
            reported=usage.prompt_tokens,
        )
    record_upstream_call(
        UpstreamCall(
            purpose="summary",
            user_id=Conversation.objects.values_list("owner_id", flat=True).get(
                id=work.conversation_id
            ),
            conversation_id=work.conversation_id,
            message_id=None,
            chat_model_id=work.summarizer_id,
            model_name=work.summarizer_label,
            prompt_tokens=summary.prompt_tokens,
            completion_tokens=summary.completion_tokens,
            estimated=summary.usage_estimated,
        )
    )
    return summary.id


def reply_context_build(
    *, reply_id: int, work: SummaryWork, summary_id: int | None, failure: str = ""
) -> RequestContext:
    """After the summary calls: build the reply's request around the newest summary, and record
    it for the page's divider. When summarizing failed (``failure``), the turns it should have
    covered are left out for this request, and the reply says so."""
    newest = Message.objects.select_related("conversation").get(id=work.newest_id)
    model = ChatModel.objects.get(id=work.model_id)
    summary = Summary.objects.get(id=summary_id) if summary_id is not None else None
    build = {"conversation": newest.conversation, "newest": newest, "model": model}
    try:
        context = build_request_context(**build, summary=summary, strategy="summarize")
    except ContextTooLarge:
        if summary is None:
            raise
        # The summary came out longer than asked for: this once, go without it.
        context = build_request_context(**build, strategy="summarize")
        failure = failure or "the summary came out too long to send"
    if failure:
        note = f"Earlier messages could not be summarized ({failure.rstrip('.')})."
        count = context.not_sent_count
        if count:
            note += (
                f" {count} earlier message{'s were' if count != 1 else ' was'} not sent to the "
                "model for this reply."
            )
        context = replace(context, note=note)
    _reply_context_store(reply_id=reply_id, context=context)
    return context


def token_ratio_observe(*, chat_model_id: int, estimated: int, reported: int) -> None:
    """Learn from a provider's prompt_tokens how its counts compare with our estimate."""
    if estimated <= 0 or reported <= 0:
        return
    now = timezone.now()
    changes = {
        "estimated": F("estimated") * RATIO_DECAY + estimated,
        "reported": F("reported") * RATIO_DECAY + reported,
        "samples": F("samples") + 1,
        "updated_at": now,
    }
    # One UPDATE, so that replies finishing at the same time each add their report.
    if TokenCalibration.objects.filter(chat_model_id=chat_model_id).update(**changes):
        return
    try:
        with transaction.atomic():
            TokenCalibration.objects.create(
                chat_model_id=chat_model_id,
                estimated=estimated,
                reported=reported,
                samples=1,
                updated_at=now,
            )
    except IntegrityError:
        # Created meanwhile by another reply (or the model is gone): add to it if it exists.
        TokenCalibration.objects.filter(chat_model_id=chat_model_id).update(**changes)


def _no_model_message(team: object) -> str:
    if not ChatModel.objects.filter(enabled=True, provider__enabled=True).exists():
        return NO_MODEL_MESSAGE
    who = f"the team “{team}”" if team is not None else "people outside a team"
    return (
        f"None of the models configured here is available to {who}. "
        "Ask a team admin or a site admin for access."
    )


def _model_unavailable_message(model: ChatModel, team: object) -> str:
    who = f"the team “{team}”" if team is not None else "people outside a team"
    return (
        f"The model “{model.label}” is not available to {who}. Nothing was sent: start a new "
        "chat to use a model your team may use, or ask a team admin for access."
    )


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
    call: UsageCall | None = None,
) -> Message:
    """Close a reply with its final text and status; a reply already closed is left as it is.

    ``call`` is the call's metering (usage.meter): its record is written in the same
    transaction, exactly once per reply even when this runs twice or races the orphan sweep.
    """
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
    with transaction.atomic():
        closed = Message.objects.filter(id=reply_id, status=Message.Status.STREAMING).update(
            **fields
        )
        if call is not None:
            usage_record_call(call=call)
    reply = Message.objects.select_related("conversation").get(id=reply_id)
    if closed and (reply.prompt_tokens is not None or reply.completion_tokens is not None):
        record_upstream_call(
            UpstreamCall(
                purpose="reply",
                user_id=reply.conversation.owner_id,
                conversation_id=reply.conversation_id,
                message_id=reply.id,
                chat_model_id=reply.model_id,
                model_name=reply.model_name,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                estimated=reply.usage_estimated,
            )
        )
    return reply


def replies_mark_interrupted(*, older_than: timedelta) -> list[Message]:
    """Mark replies left "streaming" by a process that died as interrupted, keeping their text.

    A live generation touches its row at least every few seconds, so only replies untouched for
    ``older_than`` are taken: safe to run from any process, at start-up and periodically.
    Returns the replies it closed.
    """
    cutoff = timezone.now() - older_than
    last_touched = dict(
        Message.objects.filter(status=Message.Status.STREAMING, updated_at__lt=cutoff).values_list(
            "id", "updated_at"
        )
    )
    stale = list(last_touched)
    if not stale:
        return []
    with transaction.atomic():
        Message.objects.filter(
            id__in=stale, status=Message.Status.STREAMING, updated_at__lt=cutoff
        ).update(
            status=Message.Status.INTERRUPTED,
            error_kind="interrupted",
            error="The server stopped while this reply was being written.",
            updated_at=timezone.now(),
        )
        closed = list(
            Message.objects.filter(id__in=stale, status=Message.Status.INTERRUPTED).select_related(
                "model", "model__provider"
            )
        )
        for reply in closed:
            # The call lasted until its process last touched the row, not until this sweep.
            reply.updated_at = last_touched.get(reply.id, reply.updated_at)
        # The call of each reply is recorded now, with estimated tokens (idempotent).
        usage_record_interrupted_replies(replies=closed)
    return closed
