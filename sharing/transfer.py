"""The export formats (docs/export-format.md): JSON for a conversation or an archive of them, and
Markdown for reading. Pure functions over model instances and plain data; no queries here.

Parsing an import is strict: anything that does not fit the format is refused with a message that
says where, before anything is stored.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conversations.models import Conversation, Message
from sharing.errors import ImportRefused

CONVERSATION_FORMAT = "teamchat.conversation"
ARCHIVE_FORMAT = "teamchat.archive"
VERSION = 1

TITLE_MAX_CHARS = 200
_ROLES = {choice.value for choice in Message.Role}
_STATUSES = {choice.value for choice in Message.Status}
_SHORT_FIELDS = {"finish_reason": 40, "error_kind": 40, "model": 200}
_MAX_COUNT = 2**31 - 1  # PositiveIntegerField on PostgreSQL


# --- export ------------------------------------------------------------------------------------
def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parents_first(messages: Iterable[Message]) -> list[Message]:
    """Messages in id order, except that a parent always comes before its children (the format
    promises it, and an importer can then check references in one pass)."""
    pending = sorted(messages, key=lambda m: m.id)
    ids = {m.id for m in pending}
    children: dict[int, list[Message]] = {}
    ready: list[tuple[int, Message]] = []
    for message in pending:
        if message.parent_id in ids:
            children.setdefault(message.parent_id, []).append(message)
        else:
            ready.append((message.id, message))
    heapq.heapify(ready)
    ordered: list[Message] = []
    while ready:
        _, message = heapq.heappop(ready)
        ordered.append(message)
        for child in children.pop(message.id, []):
            heapq.heappush(ready, (child.id, child))
    return ordered


def conversation_to_dict(conversation: Conversation, messages: Iterable[Message]) -> dict:
    """One conversation with its whole tree."""
    local: dict[int, int] = {}
    rows = []
    for message in _parents_first(messages):
        local[message.id] = len(local) + 1
        rows.append(
            {
                "id": local[message.id],
                "parent": local.get(message.parent_id) if message.parent_id else None,
                "role": message.role,
                "content": message.content,
                "reasoning": message.reasoning,
                "status": message.status,
                "finish_reason": message.finish_reason,
                "error_kind": message.error_kind,
                "error": message.error,
                "model": message.model_name,
                "created_at": _time(message.created_at),
                "updated_at": _time(message.updated_at),
                "token_count": message.token_count,
                "prompt_tokens": message.prompt_tokens,
                "completion_tokens": message.completion_tokens,
                "usage_estimated": message.usage_estimated,
            }
        )
    return {
        "title": conversation.title,
        "created_at": _time(conversation.created_at),
        "updated_at": _time(conversation.updated_at),
        "model": conversation.model.name if conversation.model else None,
        "system_prompt": conversation.system_prompt,
        "current_leaf": local.get(conversation.current_leaf_id)
        if conversation.current_leaf_id
        else None,
        "messages": rows,
    }


def single_export(conversation: Conversation, messages: Iterable[Message]) -> dict:
    return {
        "format": CONVERSATION_FORMAT,
        "version": VERSION,
        "exported_at": _time(datetime.now(UTC)),
        "conversation": conversation_to_dict(conversation, messages),
    }


def archive_export(conversations: Iterable[dict]) -> dict:
    return {
        "format": ARCHIVE_FORMAT,
        "version": VERSION,
        "exported_at": _time(datetime.now(UTC)),
        "conversations": list(conversations),
    }


def to_json_bytes(document: dict) -> bytes:
    # Unicode as it is (emoji, CJK, RTL stay readable in the file); indented for people.
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


def conversation_markdown(
    conversation: Conversation, path: list[Message], *, total_messages: int
) -> str:
    """The branch shown, as a Markdown document for reading (not for importing)."""
    stamp = "%Y-%m-%d %H:%M UTC"
    lines = [f"# {conversation.display_title}", ""]
    lines.append(f"- Created: {conversation.created_at.astimezone(UTC).strftime(stamp)}")
    if conversation.model:
        lines.append(f"- Model: {conversation.model.label}")
    lines.append(f"- Exported from Team Chat: {datetime.now(UTC).strftime(stamp)}")
    if total_messages > len(path):
        lines.append(
            f"- This is the branch shown ({len(path)} of {total_messages} messages); "
            "the JSON export holds every branch."
        )
    lines.append("")
    if conversation.system_prompt:
        lines += ["## System prompt", "", _quote(conversation.system_prompt), ""]
    for message in path:
        is_user = message.role == Message.Role.USER
        author = "You" if is_user else (message.model_name or "Assistant")
        when = message.created_at.astimezone(UTC).strftime(stamp)
        lines += ["---", "", f"## {author} · {when}", ""]
        if message.reasoning:
            lines += ["> **Reasoning**", ">", _quote(message.reasoning), ""]
        if message.content:
            lines += [message.content.rstrip("\n"), ""]
        if message.status not in (Message.Status.COMPLETE, Message.Status.STREAMING):
            lines += [f"*({message.get_status_display()})*", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- import ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MessageData:
    parent: int | None  # index of the parent in ConversationData.messages
    role: str
    content: str
    reasoning: str
    status: str
    finish_reason: str
    error_kind: str
    error: str
    model_name: str
    created_at: datetime | None
    updated_at: datetime | None
    token_count: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    usage_estimated: bool


@dataclass(frozen=True)
class ConversationData:
    title: str
    system_prompt: str
    model_name: str | None
    created_at: datetime | None
    updated_at: datetime | None
    messages: list[MessageData]
    current_leaf: int | None  # index into messages


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused(
            "This file is not UTF-8 text, so it is not a Team Chat export."
        ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ImportRefused(
            f"This file is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ImportRefused(f"This file is not valid JSON ({exc}).") from None


class _Reader:
    """Checks one object's fields and names the place in every refusal."""

    def __init__(self, obj: object, where: str) -> None:
        if not isinstance(obj, dict):
            raise ImportRefused(f"{where} must be a JSON object.")
        self.obj = obj
        self.where = where

    def refuse(self, key: str, problem: str) -> ImportRefused:
        return ImportRefused(f"{self.where}: “{key}” {problem}.")

    def text(self, key: str, *, default: str = "", max_chars: int | None = None) -> str:
        value = self.obj.get(key, default)
        if value is None:
            value = default
        if not isinstance(value, str):
            raise self.refuse(key, "must be a string")
        if "\x00" in value:
            raise self.refuse(key, "contains a NUL character, which cannot be stored")
        if max_chars is not None and len(value) > max_chars:
            raise self.refuse(key, f"is longer than {max_chars} characters")
        return value

    def choice(self, key: str, allowed: set[str], *, default: str | None = None) -> str:
        value = self.obj.get(key, default)
        if value not in allowed:
            names = ", ".join(sorted(allowed))
            raise self.refuse(key, f"must be one of {names}")
        return value

    def count(self, key: str) -> int | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNT:
            raise self.refuse(key, "must be a whole number of tokens, or null")
        return value

    def flag(self, key: str) -> bool:
        value = self.obj.get(key, False)
        if not isinstance(value, bool):
            raise self.refuse(key, "must be true or false")
        return value

    def time(self, key: str) -> datetime | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.refuse(key, "must be an ISO 8601 date and time")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise self.refuse(key, "must be an ISO 8601 date and time") from None
        # A time without a zone is read as UTC (documented).
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _local_id(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return f"{type(value).__name__}:{value}"


def _conversation(obj: object, where: str) -> ConversationData:
    reader = _Reader(obj, where)
    title = reader.text("title")
    raw_messages = reader.obj.get("messages", [])
    if not isinstance(raw_messages, list):
        raise reader.refuse("messages", "must be a list")
    index_of: dict[str, int] = {}
    messages: list[MessageData] = []
    for position, raw in enumerate(raw_messages, start=1):
        item = _Reader(raw, f"{where}, message {position}")
        key = _local_id(item.obj.get("id"))
        if key is None:
            raise item.refuse("id", "must be a number or a string")
        if key in index_of:
            raise item.refuse("id", "is used by another message of this conversation")
        parent: int | None = None
        if item.obj.get("parent") is not None:
            parent_key = _local_id(item.obj["parent"])
            if parent_key not in index_of:
                raise item.refuse("parent", "must be the id of a message listed before it")
            parent = index_of[parent_key]
        status = item.choice("status", _STATUSES, default=Message.Status.COMPLETE)
        if status == Message.Status.STREAMING:
            # Nothing is writing it any more: keep the text, as a reply cut short.
            status = Message.Status.INTERRUPTED
        messages.append(
            MessageData(
                parent=parent,
                role=item.choice("role", _ROLES),
                content=item.text("content"),
                reasoning=item.text("reasoning"),
                status=status,
                finish_reason=item.text("finish_reason", max_chars=_SHORT_FIELDS["finish_reason"]),
                error_kind=item.text("error_kind", max_chars=_SHORT_FIELDS["error_kind"]),
                error=item.text("error"),
                model_name=item.text("model", max_chars=_SHORT_FIELDS["model"]),
                created_at=item.time("created_at"),
                updated_at=item.time("updated_at"),
                token_count=item.count("token_count"),
                prompt_tokens=item.count("prompt_tokens"),
                completion_tokens=item.count("completion_tokens"),
                usage_estimated=item.flag("usage_estimated"),
            )
        )
        index_of[key] = len(messages) - 1

    current_leaf: int | None = len(messages) - 1 if messages else None
    if reader.obj.get("current_leaf") is not None:
        leaf_key = _local_id(reader.obj["current_leaf"])
        if leaf_key not in index_of:
            raise reader.refuse("current_leaf", "must be the id of one of its messages")
        current_leaf = index_of[leaf_key]
    model = reader.obj.get("model")
    if model is not None and not isinstance(model, str):
        raise reader.refuse("model", "must be a string or null")
    return ConversationData(
        title=" ".join(title.split())[:TITLE_MAX_CHARS],
        system_prompt=reader.text("system_prompt"),
        model_name=model or None,
        created_at=reader.time("created_at"),
        updated_at=reader.time("updated_at"),
        messages=messages,
        current_leaf=current_leaf,
    )


def parse_import(data: bytes) -> list[ConversationData]:
    """The conversations in an export file (one, or an archive), or ImportRefused."""
    document = load_json(data)
    if not isinstance(document, dict) or "format" not in document:
        raise ImportRefused(
            "This is not a Team Chat export: the file has no “format” field. Export a "
            "conversation as JSON (or all of them as an archive) and import that file."
        )
    kind = document.get("format")
    if kind not in (CONVERSATION_FORMAT, ARCHIVE_FORMAT):
        raise ImportRefused(f"This file's format, {str(kind)[:60]!r}, is not one Team Chat reads.")
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ImportRefused("This file has no valid “version” number.")
    if version > VERSION:
        raise ImportRefused(
            f"This file was written by a newer Team Chat (format version {version}); "
            f"this server reads version {VERSION}."
        )
    if kind == CONVERSATION_FORMAT:
        return [_conversation(document.get("conversation"), "The conversation")]
    items = document.get("conversations")
    if not isinstance(items, list):
        raise ImportRefused("This archive has no “conversations” list.")
    if not items:
        raise ImportRefused("This archive holds no conversations; there is nothing to import.")
    return [_conversation(item, f"Conversation {n}") for n, item in enumerate(items, start=1)]
