"""Writing a summary of earlier messages: the request, and the call through providers.client.

No database access here: the generation task loads the texts (selectors.summary_source) and
stores the result (services.summary_store) through database_sync_to_async, and calls
``write_summary`` on the event loop in between.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass

from conversations.tokens import message_tokens, truncate_to_tokens
from providers.client import ChatRequest, ProviderConfig, stream_chat
from providers.events import Event, Finish, TextDelta, UpstreamError, Usage

INSTRUCTIONS = (
    "You keep a running summary of a conversation between a user and an AI assistant, so that "
    "the assistant can go on without the full history. Merge the new messages into the summary "
    "so far. Keep what a continuation needs: facts, names, numbers, decisions, code identifiers, "
    "the user's goals, preferences and instructions, and questions still open; leave out "
    "pleasantries and repetition. Write compact notes in the conversation's language, in the "
    'third person ("The user asked…"), at most about {words} words. Answer with the updated '
    "summary only."
)
# The instructions with the largest word count we fill in, plus the headings of the user part.
INSTRUCTIONS_TOKENS = message_tokens(INSTRUCTIONS.format(words=99999)) + 32
ROLE_NAMES = {"user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class SummaryResult:
    text: str = ""
    usage: Usage | None = None
    error: str = ""
    # Our estimate of the call's prompt, for the token calibration.
    estimated_prompt_tokens: int = 0


def summary_request(
    *,
    model: str,
    previous: str | None,
    messages: list[tuple[str, str]],
    max_tokens: int,
    input_tokens: int,
) -> ChatRequest:
    """The old summary (if any) and the messages to fold in, as one user message: the
    transcript is material to summarize, not a conversation to continue."""
    words = max(int(max_tokens * 0.7), 20)
    parts = []
    if previous is not None:
        parts.append(f"Summary so far:\n\n{previous}\n\nNew messages:")
    else:
        parts.append("Messages:")
    for role, text in messages:
        parts.append(f"{ROLE_NAMES.get(role, role)}: {truncate_to_tokens(text, input_tokens)}")
    return ChatRequest(
        model=model,
        messages=[
            {"role": "system", "content": INSTRUCTIONS.format(words=words)},
            {"role": "user", "content": "\n\n".join(parts)},
        ],
        params={"max_tokens": max_tokens},
    )


async def write_summary(
    config: ProviderConfig,
    request: ChatRequest,
    observe: Callable[[Event], None] | None = None,
) -> SummaryResult:
    """Make the call and collect the whole text. Never raises for upstream trouble.
    ``observe`` sees every event (usage metering: usage.meter.CallMeter.observe)."""
    estimated = sum(message_tokens(m["content"]) for m in request.messages)
    parts: list[str] = []
    usage: Usage | None = None
    async with aclosing(stream_chat(config, request)) as events:
        async for event in events:
            if observe is not None:
                observe(event)
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, Usage):
                usage = event
            elif isinstance(event, UpstreamError):
                return SummaryResult(error=event.message, usage=usage)
            elif isinstance(event, Finish) and event.reason == "content_filter":
                return SummaryResult(error="The provider's content filter stopped the summary.")
    text = "".join(parts).strip()
    if not text:
        return SummaryResult(error="The model wrote an empty summary.", usage=usage)
    return SummaryResult(text=text, usage=usage, estimated_prompt_tokens=estimated)
