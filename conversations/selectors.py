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
from django.db import connection
from django.db.models import QuerySet

from conversations.errors import ConversationNotFound, MessageNotFound
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


_LISTED_FIELDS = ("id", "title", "updated_at", "created_at", "pinned", "archived")


def _conversation_page(
    *, user: AbstractBaseUser, archived: bool, page: int, size: int
) -> SidebarPage:
    page = max(page, 1)
    offset = (page - 1) * size
    # One row more than shown tells whether there is a next page without a COUNT(*). The order
    # follows the conv_owner_sidebar index, so only the rows shown are read.
    rows = list(
        Conversation.objects.filter(owner=user, archived=archived)
        .only(*_LISTED_FIELDS)
        .order_by("-pinned", "-updated_at", "-created_at")[offset : offset + size + 1]
    )
    has_more = len(rows) > size
    return SidebarPage(conversations=rows[:size], next_page=page + 1 if has_more else None)


def sidebar_page(*, user: AbstractBaseUser, page: int = 1) -> SidebarPage:
    """The user's conversations that are not archived, pinned first, then the newest."""
    return _conversation_page(
        user=user, archived=False, page=page, size=settings.CHAT_SIDEBAR_PAGE_SIZE
    )


def archive_page(*, user: AbstractBaseUser, page: int = 1) -> SidebarPage:
    return _conversation_page(
        user=user, archived=True, page=page, size=settings.CHAT_SIDEBAR_PAGE_SIZE
    )


# --- the message tree -------------------------------------------------------------------------
# Walks follow parent pointers one primary-key lookup at a time (a recursive CTE, which SQLite
# and PostgreSQL both run), so reading the last N messages of a branch costs N lookups whatever
# the size of the conversation.

_TABLE = Message._meta.db_table
_WALK_UP_SQL = f"""
WITH RECURSIVE walk(id, parent_id, depth) AS (
    SELECT id, parent_id, 1 FROM {_TABLE} WHERE id = %s
    UNION ALL
    SELECT m.id, m.parent_id, walk.depth + 1
    FROM {_TABLE} m JOIN walk ON m.id = walk.parent_id
    WHERE walk.depth < %s AND walk.id <> %s
)
SELECT id, parent_id FROM walk ORDER BY depth DESC
"""  # the table name is ours; every value is a parameter
_NEWEST_LEAF_SQL = f"""
WITH RECURSIVE below(id) AS (
    SELECT id FROM {_TABLE} WHERE id = %s
    UNION ALL
    SELECT m.id FROM {_TABLE} m JOIN below ON m.parent_id = below.id
)
SELECT MAX(id) FROM below
"""
_NO_LIMIT = 2**31 - 1


def path_walk(
    *, start_id: int, limit: int | None = None, stop_at: int | None = None
) -> list[tuple[int, int | None]]:
    """(id, parent_id) from ``start_id`` up towards the root, returned oldest first.

    At most ``limit`` rows; the walk also ends after reaching ``stop_at``. The first row's
    parent_id is None exactly when the walk reached the root.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _WALK_UP_SQL, [start_id, limit or _NO_LIMIT, -1 if stop_at is None else stop_at]
        )
        return [(row[0], row[1]) for row in cursor.fetchall()]


def path_ids_to(*, message_id: int) -> list[int]:
    """Ids of the messages from the root down to ``message_id`` (inclusive), oldest first."""
    return [row[0] for row in path_walk(start_id=message_id)]


def path_ids(*, conversation: Conversation) -> list[int]:
    """Ids of the messages on the branch shown, oldest first, without loading any text."""
    leaf_id = conversation.current_leaf_id
    return [] if leaf_id is None else path_ids_to(message_id=leaf_id)


def messages_on_path(*, conversation: Conversation) -> list[Message]:
    """Every message of the branch shown (for exports and shares; pages use thread_window)."""
    ids = path_ids(conversation=conversation)
    # sent_context: a reply's note (e.g. summarizing failed) is shown on it; joined, not N+1.
    by_id = Message.objects.select_related("sent_context").in_bulk(ids)
    messages = [by_id[i] for i in ids if i in by_id]
    annotate_tree(messages, leaf_id=conversation.current_leaf_id)
    return messages


def newest_leaf_under(*, message_id: int) -> int:
    """The most recent message in the subtree of ``message_id`` (itself when it has none).

    Ids grow with time and a child is always newer than its parent, so the newest message of a
    subtree has no children: it is the leaf of the branch written last.
    """
    with connection.cursor() as cursor:
        cursor.execute(_NEWEST_LEAF_SQL, [message_id])
        row = cursor.fetchone()
    return row[0] if row and row[0] is not None else message_id


def leaf_through(*, conversation: Conversation, message_id: int | None) -> int | None:
    """The leaf to show so that ``message_id`` is on the branch: the current leaf when it
    already is (or when the message is not this conversation's), else the newest leaf under it.
    """
    current = conversation.current_leaf_id
    if message_id is None or current is None:
        return current
    if not Message.objects.filter(conversation=conversation, id=message_id).exists():
        return current
    walked = path_walk(start_id=current, stop_at=message_id)
    if walked and walked[0][0] == message_id:
        return current
    return newest_leaf_under(message_id=message_id)


def message_get_in(*, conversation: Conversation, message_id: object) -> Message:
    """A message of this (already authorized) conversation, or ChatError "not_found"."""
    if isinstance(message_id, bool) or not isinstance(message_id, int | str):
        raise MessageNotFound
    try:
        number = int(message_id)
    except ValueError:
        raise MessageNotFound from None
    if not 0 < number < 2**63:
        raise MessageNotFound
    try:
        return Message.objects.get(conversation=conversation, id=number)
    except Message.DoesNotExist:
        raise MessageNotFound from None


@dataclass(frozen=True)
class SiblingInfo:
    """Where a message stands among the alternatives written at the same point of the tree."""

    position: int  # 1-based, oldest first
    count: int
    previous_id: int | None
    next_id: int | None


def sibling_info(messages: list[Message]) -> dict[int, SiblingInfo]:
    """For each message, its place among its siblings (children of the same parent).

    Two small queries whatever the conversation's size: one for the children of the parents
    shown, one for the conversation's roots when a root is shown.
    """
    if not messages:
        return {}
    parent_ids = {m.parent_id for m in messages if m.parent_id is not None}
    groups: dict[int | None, list[int]] = {}
    if parent_ids:
        for parent_id, child_id in (
            Message.objects.filter(parent_id__in=parent_ids)
            .order_by("id")
            .values_list("parent_id", "id")
        ):
            groups.setdefault(parent_id, []).append(child_id)
    if any(m.parent_id is None for m in messages):
        groups[None] = list(
            Message.objects.filter(conversation_id=messages[0].conversation_id, parent__isnull=True)
            .order_by("id")
            .values_list("id", flat=True)
        )
    info: dict[int, SiblingInfo] = {}
    for message in messages:
        siblings = groups.get(message.parent_id) or [message.id]
        index = siblings.index(message.id) if message.id in siblings else 0
        info[message.id] = SiblingInfo(
            position=index + 1,
            count=len(siblings),
            previous_id=siblings[index - 1] if index > 0 else None,
            next_id=siblings[index + 1] if index + 1 < len(siblings) else None,
        )
    return info


def annotate_tree(messages: list[Message], *, leaf_id: int | None) -> list[Message]:
    """Attach to each message, for the templates: ``siblings`` (SiblingInfo), ``is_leaf``, and
    ``continues`` (an assistant reply that continues the reply above it)."""
    info = sibling_info(messages)
    roles = {m.id: m.role for m in messages}
    unknown = {
        m.parent_id
        for m in messages
        if m.role == Message.Role.ASSISTANT and m.parent_id is not None and m.parent_id not in roles
    }
    if unknown:
        roles.update(Message.objects.filter(id__in=unknown).values_list("id", "role"))
    for message in messages:
        message.siblings = info[message.id]
        message.is_leaf = message.id == leaf_id
        message.continues = (
            message.role == Message.Role.ASSISTANT
            and roles.get(message.parent_id) == Message.Role.ASSISTANT
        )
    return messages


@dataclass(frozen=True)
class ThreadWindow:
    """The part of a branch a page shows: its newest messages, older ones loaded on demand."""

    messages: list[Message]
    # The oldest message shown, when older ones exist (the "load older" sentinel asks for them).
    older_than: int | None
    leaf_id: int | None


def thread_window(
    *,
    conversation: Conversation,
    leaf_id: int | None = None,
    before: int | None = None,
    include: int | None = None,
    size: int | None = None,
) -> ThreadWindow:
    """The last ``size`` messages of the branch ending at ``leaf_id`` (default: the one shown).

    ``before``: the page holds the messages from this one down; give the ``size`` above it.
    ``include``: extend the window up to this message (a link to a message of an old turn).
    Only the messages returned are read, with their text.
    """
    size = size or settings.CHAT_THREAD_PAGE_SIZE
    leaf_id = leaf_id if leaf_id is not None else conversation.current_leaf_id
    if before is not None:
        start = (
            Message.objects.filter(conversation=conversation, id=before)
            .values_list("parent_id", flat=True)
            .first()
        )
    else:
        start = leaf_id
    if start is None:
        return ThreadWindow(messages=[], older_than=None, leaf_id=leaf_id)
    rows = path_walk(start_id=start, limit=size)
    if include is not None and before is None and all(row[0] != include for row in rows):
        rows = path_walk(start_id=start, stop_at=include)
    ids = [row[0] for row in rows]
    by_id = (
        Message.objects.filter(conversation=conversation)
        .select_related("sent_context")
        .in_bulk(ids)
    )
    messages = [by_id[i] for i in ids if i in by_id]
    annotate_tree(messages, leaf_id=leaf_id)
    has_older = bool(rows) and rows[0][1] is not None
    return ThreadWindow(
        messages=messages,
        older_than=messages[0].id if has_older and messages else None,
        leaf_id=leaf_id,
    )


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


def finished_reply(*, conversation: Conversation, message_id: int) -> Message | None:
    """A reply of this conversation that is no longer streaming (None for any other id)."""
    replies = Message.objects.filter(
        conversation=conversation, id=message_id, role=Message.Role.ASSISTANT
    )
    return replies.exclude(status=Message.Status.STREAMING).first()


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
