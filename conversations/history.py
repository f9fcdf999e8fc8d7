"""The history service: which stored messages go into the next request.

Budget = the model's context window - the reply's reserved max_tokens - a safety margin. The
system prompt and the newest user message are always sent; older turns (a user message with the
replies that follow it) are added newest first while they fit, and the rest are left out. Nothing
stored is changed. It reads token counts kept on the messages and loads the text only of the
messages it sends.

Sync; call through database_sync_to_async.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from conversations.errors import ChatError
from conversations.models import Conversation, Message
from conversations.tokens import PER_MESSAGE_OVERHEAD, message_tokens
from providers.models import ChatModel


class ContextTooLarge(ChatError):
    def __init__(self, *, needed: int, allowed: int) -> None:
        super().__init__(
            f"This message is about {needed:,} tokens with the system prompt, but this model "
            f"accepts at most {allowed:,} per request. Nothing was sent: shorten the message "
            "and try again.",
            code="context_too_large",
        )
        self.needed = needed
        self.allowed = allowed


@dataclass(frozen=True)
class RequestContext:
    messages: list[dict[str, str]]
    sent_ids: list[int]
    omitted_ids: list[int] = field(default_factory=list)
    estimated_prompt_tokens: int = 0
    budget: int = 0


def context_budget(model: ChatModel) -> tuple[int, int]:
    """(prompt budget, reserved max_tokens) for one request to ``model``."""
    window = model.context_window or settings.CHAT_DEFAULT_CONTEXT_WINDOW
    reserved = min(model.max_output_tokens or settings.CHAT_DEFAULT_MAX_OUTPUT_TOKENS, window // 2)
    return window - reserved - settings.CHAT_CONTEXT_SAFETY_MARGIN, reserved


def _path_to(message: Message) -> list[int]:
    parents = dict(
        Message.objects.filter(conversation_id=message.conversation_id).values_list(
            "id", "parent_id"
        )
    )
    path: list[int] = []
    node: int | None = message.id
    while node is not None and node in parents:
        path.append(node)
        node = parents[node]
    path.reverse()
    return path


def _turns(rows: list[dict]) -> list[list[dict]]:
    """Group a path into turns: each user message with the replies that follow it."""
    turns: list[list[dict]] = []
    for row in rows:
        if row["role"] == Message.Role.USER or not turns:
            turns.append([row])
        else:
            turns[-1].append(row)
    return turns


def _sendable(row: dict) -> bool:
    # A failed reply with no text tells the model nothing; a stopped one shows what the user saw.
    if row["role"] == Message.Role.ASSISTANT:
        return row["status"] != Message.Status.STREAMING and row["token_count"] is not None
    return True


def build_request_context(
    *, conversation: Conversation, newest: Message, model: ChatModel
) -> RequestContext:
    budget, _ = context_budget(model)
    system_tokens = message_tokens(conversation.system_prompt) if conversation.system_prompt else 0
    newest_tokens = newest.token_count or message_tokens(newest.content)
    fixed = system_tokens + newest_tokens
    if fixed > budget:
        raise ContextTooLarge(needed=fixed, allowed=budget)

    # A first message has no history to read.
    path = _path_to(newest)[:-1] if newest.parent_id is not None else []
    rows = list(Message.objects.filter(id__in=path).values("id", "role", "status", "token_count"))
    by_id = {row["id"]: row for row in rows}
    ordered = [by_id[i] for i in path if i in by_id and _sendable(by_id[i])]

    used = fixed
    included: list[list[dict]] = []
    omitted: list[int] = []
    turns = _turns(ordered)
    for index in range(len(turns) - 1, -1, -1):
        turn = turns[index]
        cost = sum((row["token_count"] or 0) + PER_MESSAGE_OVERHEAD for row in turn)
        if used + cost > budget:
            # Left out from here back: a gap in the middle would confuse the model more.
            omitted = [row["id"] for t in turns[: index + 1] for row in t]
            break
        used += cost
        included.append(turn)
    included.reverse()

    sent_ids = [row["id"] for turn in included for row in turn]
    texts = dict(Message.objects.filter(id__in=sent_ids).values_list("id", "content"))
    messages: list[dict[str, str]] = []
    if conversation.system_prompt:
        messages.append({"role": "system", "content": conversation.system_prompt})
    for turn in included:
        for row in turn:
            messages.append({"role": row["role"], "content": texts[row["id"]]})
    messages.append({"role": "user", "content": newest.content})
    return RequestContext(
        messages=messages,
        sent_ids=[*sent_ids, newest.id],
        omitted_ids=omitted,
        estimated_prompt_tokens=used,
        budget=budget,
    )
