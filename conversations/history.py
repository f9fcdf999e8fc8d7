"""The history service: which stored messages go into the next request, and what stands in for
the ones that do not fit.

Budget = the model's context window - the reply's reserved max_tokens - a safety margin, in the
provider's tokens; our tiktoken estimates are scaled by the ratio learned from what the provider
reported (TokenCalibration). Always sent: the system prompt, the summary of earlier turns if
there is one, and the newest user message; if these alone exceed the budget the send is refused
before anything is stored. Older turns (a user message with the replies that follow it) are added
newest first while they fit. What does not fit is, per the strategy in force:

- "drop": left out;
- "summarize": folded into a summary a model writes, stored (conversations.Summary) and sent in
  their place. A summary is reused while it is enough; when more must be left out it is extended
  (old summary + the newly left-out turns), never rewritten from scratch. Folding leaves only
  about half the room to recent turns, so one summary call absorbs many turns: summary calls grow
  with the amount of history left out, not with the number of turns.

The walk up the branch is one recursive query that stops where the budget is spent (or at the end
of the summary in use), so a request costs the same in a conversation of 100 messages as in one
of 10,000; only the texts of the messages sent are loaded. Nothing stored is ever changed.

``plan_request`` runs inside message_send's transaction: it either returns the final request, or
says what must be summarized first; the generation task then makes those calls (never inside the
transaction) and ``build_request_context`` builds the final request around the new summary.

Sync; call through database_sync_to_async.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import connection

from conversations.errors import ChatError
from conversations.models import Conversation, Message, Summary, TokenCalibration
from conversations.summaries import INSTRUCTIONS_TOKENS
from conversations.tokens import message_tokens
from providers.client import ProviderConfig
from providers.models import ChatModel, ContextStrategy

# When turns must be folded into the summary, recent turns keep at most this share of the room,
# so that the next few turns fit without another summary call.
KEEP_FRACTION = 0.5
# How far a provider's count may move our estimate. Real tokenizers differ from cl100k by about
# 0.85x-1.4x; below that a report is more likely wrong (some providers leave cached input out of
# prompt_tokens) and trusting it would overflow the window, so it may only shrink requests a
# little, while a larger count (the safe direction) is followed much further.
RATIO_BOUNDS = (0.75, 4.0)
# Newer reports weigh more: each report keeps this share of what was learned before.
RATIO_DECAY = 0.8
SUMMARY_HEADING = (
    "Summary of the earlier part of this conversation (those messages are not repeated below):"
)
# Below this many tokens of room for the messages to summarize, a summary call is pointless.
MIN_SUMMARY_INPUT = 100


class ContextTooLarge(ChatError):
    def __init__(
        self, *, message: int, needed: int, allowed: int, extras: Collection[str] = ()
    ) -> None:
        text = f"This message is about {message:,} tokens"
        if extras:
            text += f"; with {' and '.join(extras)} the request would be about {needed:,}"
        room = max(allowed - (needed - message), 0)
        super().__init__(
            f"{text}, but this model accepts at most {allowed:,} per request. Nothing was sent: "
            f"shorten the message to under about {room:,} tokens and try again.",
            code="context_too_large",
        )
        self.needed = needed
        self.allowed = allowed


@dataclass(frozen=True)
class RequestContext:
    """The messages of one request, and what the page needs to show where they begin."""

    messages: list[dict[str, str]]
    sent_ids: list[int]
    strategy: str
    # The first stored message sent: the divider goes above it.
    first_sent_id: int
    # Messages before first_sent on the branch, and how many of those the summary stands for.
    earlier_count: int = 0
    summarized_count: int = 0
    summary_id: int | None = None
    # Our estimate of the request's size (before the provider correction), and the budget.
    estimated_prompt_tokens: int = 0
    budget: int = 0
    note: str = ""

    @property
    def not_sent_count(self) -> int:
        return self.earlier_count - self.summarized_count


@dataclass(frozen=True)
class SummaryStep:
    """One summary call: fold these messages (oldest first) into the summary so far."""

    message_ids: tuple[int, ...]
    # The last message on the branch the new summary covers (may be one not worth sending, such
    # as an empty failed reply, which is covered without being summarized).
    last_id: int
    last_depth: int


@dataclass(frozen=True)
class SummaryWork:
    """What the generation task must summarize before it can send the request."""

    conversation_id: object
    newest_id: int
    model_id: int
    base_summary_id: int | None
    first_message_id: int
    steps: tuple[SummaryStep, ...]
    # The model that writes the summaries, resolved while the database was at hand.
    config: ProviderConfig
    summarizer_id: int
    summarizer_name: str
    summarizer_label: str
    max_tokens: int
    # Tokens of transcript one call may carry; a longer single message is cut to it.
    input_tokens: int


@dataclass(frozen=True)
class ContextPlan:
    """Either the final request (``context``), or the summaries to write first (``work``)."""

    context: RequestContext | None = None
    work: SummaryWork | None = None


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    role: str
    status: str
    token_count: int | None
    depth: int

    @property
    def sendable(self) -> bool:
        # A failed reply with no text tells the model nothing; a stopped one shows what the user
        # saw. A reply still streaming is not history yet.
        if self.role == Message.Role.ASSISTANT:
            return self.status != Message.Status.STREAMING and self.token_count is not None
        return True

    @property
    def cost(self) -> int:
        return (self.token_count or 0) if self.sendable else 0


# --- settings and learned numbers ------------------------------------------------------------


def resolve_strategy(*, conversation: Conversation, model: ChatModel) -> str:
    return conversation.context_strategy or model.context_strategy or settings.CHAT_CONTEXT_STRATEGY


def context_budget(model: ChatModel, max_tokens: int | None = None) -> tuple[int, int]:
    """(prompt budget, reserved max_tokens) for one request to ``model``, in its tokens.

    The reserve is exactly the max_tokens sent: the model's max output tokens, or less when the
    conversation (or the model's default parameters) asks for less (``max_tokens``), and never
    more than half the window.
    """
    window = model.context_window or settings.CHAT_DEFAULT_CONTEXT_WINDOW
    reserved = min(model.max_output_tokens or settings.CHAT_DEFAULT_MAX_OUTPUT_TOKENS, window // 2)
    if max_tokens:
        reserved = min(reserved, max_tokens)
    return window - reserved - settings.CHAT_CONTEXT_SAFETY_MARGIN, reserved


def reply_token_limit(model: ChatModel) -> int:
    """The largest max_tokens a conversation may ask of ``model`` (what is asked is sent)."""
    return context_budget(model)[1]


def requested_max_tokens(*, conversation: Conversation, model: ChatModel) -> int | None:
    """The reply length the conversation asks for, else the model's default parameter."""
    for params in (conversation.params, model.default_params):
        value = (params or {}).get("max_tokens")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def conversation_budget(*, conversation: Conversation, model: ChatModel) -> tuple[int, int]:
    """context_budget for this conversation's requests to ``model``."""
    return context_budget(model, requested_max_tokens(conversation=conversation, model=model))


def token_ratio(model_id: int) -> float:
    """Provider tokens per estimated token for this model (1.0 until a provider reported)."""
    row = (
        TokenCalibration.objects.filter(chat_model_id=model_id)
        .values_list("estimated", "reported")
        .first()
    )
    if row is None or row[0] <= 0 or row[1] <= 0:
        return 1.0
    low, high = RATIO_BOUNDS
    return min(max(row[1] / row[0], low), high)


def summary_max_tokens(room: int) -> int:
    return max(min(settings.CHAT_SUMMARY_MAX_TOKENS, room // 4), 1)


def system_text(prompt: str, summary: str | None) -> str:
    """The one system message: the conversation's prompt, then the summary if there is one
    (one message, because several system messages confuse some providers' chat templates)."""
    parts = [prompt] if prompt else []
    if summary is not None:
        parts.append(f"{SUMMARY_HEADING}\n\n{summary}")
    return "\n\n".join(parts)


def _tokens(text: str) -> int:
    return message_tokens(text) if text else 0


# --- the walk up the branch -------------------------------------------------------------------


def _walk(start_id: int | None, *, limit: int | None, stops: Collection[int] = ()) -> list[_Row]:
    """The branch from ``start_id`` up towards its first message, newest first.

    Stops after the first message at which the running token count exceeds ``limit``, or at
    the first message in ``stops`` (both included), so it reads only what the budget can use.
    """
    if start_id is None:
        return []
    table = connection.ops.quote_name(Message._meta.db_table)
    conditions = []
    params: list[object] = [start_id]
    if limit is not None:
        conditions.append("w.total <= %s")
        params.append(limit)
    if stops:
        conditions.append(f"w.id NOT IN ({', '.join(['%s'] * len(stops))})")
        params.extend(stops)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    # Only placeholders and the quoted table name are put into the text; values are parameters.
    query = f"""
        WITH RECURSIVE walk (id, parent_id, role, status, token_count, depth, total) AS (
            SELECT id, parent_id, role, status, token_count, depth, COALESCE(token_count, 0)
            FROM {table} WHERE id = %s
          UNION ALL
            SELECT m.id, m.parent_id, m.role, m.status, m.token_count, m.depth,
                   w.total + COALESCE(m.token_count, 0)
            FROM {table} m JOIN walk w ON m.id = w.parent_id
            {where}
        )
        SELECT id, role, status, token_count, depth FROM walk ORDER BY depth DESC
    """
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return [_Row(*row) for row in cursor.fetchall()]


def _turns(rows: list[_Row]) -> list[list[_Row]]:
    """Group a branch (oldest first) into turns: each user message with the replies after it."""
    turns: list[list[_Row]] = []
    for row in rows:
        if row.role == Message.Role.USER or not turns:
            turns.append([row])
        else:
            turns[-1].append(row)
    return turns


def _cost(turn: list[_Row]) -> int:
    return sum(row.cost for row in turn)


def _keep_from(turns: list[list[_Row]], room: int) -> int:
    """Index of the oldest turn kept when turns are added newest first while they fit.

    Stops at the first turn that does not fit: a gap in the middle would confuse the model more
    than a clean cut.
    """
    used = 0
    for index in range(len(turns) - 1, -1, -1):
        cost = _cost(turns[index])
        if used + cost > room:
            return index + 1
        used += cost
    return 0


# --- building requests ------------------------------------------------------------------------


def _assemble(
    *,
    conversation: Conversation,
    newest: Message,
    kept: list[list[_Row]],
    summary: Summary | None,
    strategy: str,
    budget: int,
    note: str = "",
) -> RequestContext:
    rows = [row for turn in kept for row in turn if row.sendable]
    texts = dict(Message.objects.filter(id__in=[r.id for r in rows]).values_list("id", "content"))
    system = system_text(conversation.system_prompt, summary.content if summary else None)
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    for row in rows:
        if row.role == Message.Role.ASSISTANT and messages and messages[-1]["role"] == row.role:
            # A continuation (an assistant reply under an assistant reply, see message_continue)
            # finishes the text before it: one assistant message, since many chat templates
            # insist that roles alternate.
            messages[-1] = {"role": row.role, "content": messages[-1]["content"] + texts[row.id]}
        else:
            messages.append({"role": row.role, "content": texts[row.id]})
    messages.append({"role": "user", "content": newest.content})
    first = kept[0][0] if kept else None
    return RequestContext(
        messages=messages,
        sent_ids=[*(row.id for row in rows), newest.id],
        strategy=strategy,
        first_sent_id=first.id if first else newest.id,
        earlier_count=first.depth if first else newest.depth,
        summarized_count=summary.message_count if summary else 0,
        summary_id=summary.id if summary else None,
        estimated_prompt_tokens=(
            _tokens(system) + sum(row.cost for row in rows) + _newest_tokens(newest)
        ),
        budget=budget,
        note=note,
    )


def _newest_tokens(newest: Message) -> int:
    return newest.token_count or message_tokens(newest.content)


def _refuse_unless_fits(
    *, fixed: int, newest: Message, room: int, budget: int, ratio: float, extras: list[str]
) -> None:
    if fixed > room:
        raise ContextTooLarge(
            message=round(_newest_tokens(newest) * ratio),
            needed=round(fixed * ratio),
            allowed=budget,
            extras=extras,
        )


def _extras(conversation: Conversation, with_summary: bool) -> list[str]:
    extras = ["the system prompt"] if conversation.system_prompt else []
    if with_summary:
        extras.append("the summary of earlier messages")
    return extras


def build_request_context(
    *,
    conversation: Conversation,
    newest: Message,
    model: ChatModel,
    summary: Summary | None = None,
    strategy: str | None = None,
    note: str = "",
    reserve: int = 0,
) -> RequestContext:
    """The request for ``newest``: the summary given (if any), then the newest turns that fit.

    ``reserve``: tokens the caller adds after the newest message (build_continue_context).
    Raises ContextTooLarge when the system prompt, the summary and the newest message alone do
    not fit.
    """
    strategy = strategy or resolve_strategy(conversation=conversation, model=model)
    budget, _ = conversation_budget(conversation=conversation, model=model)
    ratio = token_ratio(model.id)
    room = int(budget / ratio)
    system = system_text(conversation.system_prompt, summary.content if summary else None)
    fixed = _tokens(system) + _newest_tokens(newest) + reserve
    _refuse_unless_fits(
        fixed=fixed,
        newest=newest,
        room=room,
        budget=budget,
        ratio=ratio,
        extras=_extras(conversation, summary is not None),
    )
    stops = [summary.last_message_id] if summary else []
    rows = _walk(newest.parent_id, limit=room - fixed, stops=stops)
    if summary and rows and rows[-1].id == summary.last_message_id:
        rows.pop()
    turns = _turns(rows[::-1])
    kept = turns[_keep_from(turns, room - fixed) :]
    return _assemble(
        conversation=conversation,
        newest=newest,
        kept=kept,
        summary=summary,
        strategy=strategy,
        budget=budget,
        note=note,
    )


def plan_request(*, conversation: Conversation, newest: Message, model: ChatModel) -> ContextPlan:
    """Decide the request for ``newest``: final now, or after these summaries are written.

    Raises ContextTooLarge (before anything is sent) when the newest message cannot fit.
    """
    strategy = resolve_strategy(conversation=conversation, model=model)
    if strategy != ContextStrategy.SUMMARIZE:
        return ContextPlan(
            context=build_request_context(
                conversation=conversation, newest=newest, model=model, strategy=strategy
            )
        )

    budget, _ = conversation_budget(conversation=conversation, model=model)
    ratio = token_ratio(model.id)
    room = int(budget / ratio)
    prompt = conversation.system_prompt
    _refuse_unless_fits(
        fixed=_tokens(prompt) + _newest_tokens(newest),
        newest=newest,
        room=room,
        budget=budget,
        ratio=ratio,
        extras=_extras(conversation, False),
    )
    # Summaries of this conversation by the message they end at (a handful: each stands for
    # about half a window of history). Walking up from the newest message, the first of those
    # ends met is the newest summary on this branch; summaries of other branches are never met.
    ends = dict(
        Summary.objects.filter(conversation=conversation).values_list("last_message_id", "id")
    )
    rows = _walk(newest.parent_id, limit=None, stops=list(ends))
    summary = None
    if rows and rows[-1].id in ends:
        summary = Summary.objects.get(id=ends[rows.pop().id])
    turns = _turns(rows[::-1])
    fixed = _tokens(system_text(prompt, summary.content if summary else None))
    fixed += _newest_tokens(newest)
    if fixed + sum(_cost(turn) for turn in turns) <= room:
        # Everything since the summary (or everything) fits: reuse it as it is.
        return ContextPlan(
            context=_assemble(
                conversation=conversation,
                newest=newest,
                kept=turns,
                summary=summary,
                strategy=strategy,
                budget=budget,
            )
        )

    max_tokens = summary_max_tokens(room)
    # Room for the summary to be written is reserved at its largest.
    fixed = _tokens(system_text(prompt, "")) + max_tokens + _newest_tokens(newest)
    _refuse_unless_fits(
        fixed=fixed,
        newest=newest,
        room=room,
        budget=budget,
        ratio=ratio,
        extras=_extras(conversation, True),
    )
    keep_from = _keep_from(turns, int((room - fixed) * KEEP_FRACTION))
    # A summary longer than asked for can leave nothing new to fold; then fold the oldest turn.
    keep_from = max(keep_from, 1)
    summarizer = _summarizer(model)
    input_tokens = _summary_input_tokens(summarizer, max_tokens)
    steps = _summary_steps(turns[:keep_from], input_tokens)
    if input_tokens < MIN_SUMMARY_INPUT or not steps:
        return ContextPlan(
            context=build_request_context(
                conversation=conversation,
                newest=newest,
                model=model,
                summary=summary,
                strategy=strategy,
                note="Earlier messages could not be summarized: the model that writes summaries "
                "has too small a context window.",
            )
        )
    first = summary.first_message_id if summary else turns[0][0].id
    return ContextPlan(
        work=SummaryWork(
            conversation_id=conversation.id,
            newest_id=newest.id,
            model_id=model.id,
            base_summary_id=summary.id if summary else None,
            first_message_id=first,
            steps=tuple(steps[: settings.CHAT_SUMMARY_MAX_CALLS]),
            config=summarizer.provider.to_config(),
            summarizer_id=summarizer.id,
            summarizer_name=summarizer.name,
            summarizer_label=summarizer.label,
            max_tokens=max_tokens,
            input_tokens=input_tokens,
        )
    )


# --- summaries --------------------------------------------------------------------------------


def _summarizer(model: ChatModel) -> ChatModel:
    """The model an admin designated for summaries, else the conversation's own."""
    designated = (
        ChatModel.objects.filter(use_for_summaries=True, enabled=True, provider__enabled=True)
        .select_related("provider")
        .order_by("id")
        .first()
    )
    return designated or model


def _summary_input_tokens(summarizer: ChatModel, max_tokens: int) -> int:
    """Tokens of transcript one summary call can carry, besides the instructions and the old
    summary (counted at its largest)."""
    window = summarizer.context_window or settings.CHAT_DEFAULT_CONTEXT_WINDOW
    room = window - max_tokens - settings.CHAT_CONTEXT_SAFETY_MARGIN
    room = int(room / token_ratio(summarizer.id))
    return room - INSTRUCTIONS_TOKENS - max_tokens


def _summary_steps(turns: list[list[_Row]], input_tokens: int) -> list[SummaryStep]:
    """The turns to fold, in calls of at most ``input_tokens`` each, oldest first.

    Calls end at the end of a turn unless one turn alone is larger than a call.
    """
    steps: list[SummaryStep] = []
    batch: list[_Row] = []
    used = 0

    def close() -> None:
        nonlocal batch, used
        if batch:
            ids = tuple(row.id for row in batch if row.sendable)
            steps.append(SummaryStep(ids, batch[-1].id, batch[-1].depth))
        batch, used = [], 0

    for turn in turns:
        cost = _cost(turn)
        if used + cost > input_tokens:
            close()
        if cost <= input_tokens:
            batch += turn
            used += cost
            continue
        for row in turn:  # one turn larger than a call: split it (each message cut to fit)
            row_cost = min(row.cost, input_tokens)
            if used + row_cost > input_tokens:
                close()
            batch.append(row)
            used += row_cost
    close()
    return steps


# --- continuing a reply cut off by the length limit -------------------------------------------

CONTINUE_INSTRUCTION = (
    "Your previous reply was cut off by the length limit. Continue it exactly where it stopped, "
    "without repeating anything and without any preamble."
)


class ReplyTooLongToContinue(ChatError):
    def __init__(self) -> None:
        super().__init__(
            "This reply is too long to continue within this model's context window. "
            "Ask a follow-up question instead.",
            code="context_too_large",
        )


def build_continue_context(
    *, conversation: Conversation, reply: Message, model: ChatModel
) -> RequestContext:
    """The request that continues ``reply``, an answer cut off by the length limit.

    The history up to the user message the reply answers, then the reply so far (joined with
    any earlier continuations of it) as the assistant's message, then an instruction to go on.
    The instruction is sent, never stored; the continuation is stored as a new reply under
    ``reply``, so nothing stored changes. Earlier turns that do not fit are left out.
    """
    chain = [reply]
    question: Message | None = None
    node = reply
    while node.parent_id is not None:
        parent = Message.objects.get(id=node.parent_id)
        if parent.role == Message.Role.USER:
            question = parent
            break
        chain.append(parent)
        node = parent
    if question is None:
        raise ReplyTooLongToContinue
    chain.reverse()
    partial = "".join(part.content for part in chain)
    extra = message_tokens(partial) + message_tokens(CONTINUE_INSTRUCTION)
    try:
        context = build_request_context(
            conversation=conversation, newest=question, model=model, reserve=extra
        )
    except ContextTooLarge:
        raise ReplyTooLongToContinue from None
    return replace(
        context,
        messages=[
            *context.messages,
            {"role": "assistant", "content": partial},
            {"role": "user", "content": CONTINUE_INSTRUCTION},
        ],
        sent_ids=[*context.sent_ids, *(part.id for part in chain)],
        estimated_prompt_tokens=context.estimated_prompt_tokens + extra,
    )
