"""The events a chat stream produces: the only upstream types code outside providers/ sees.

A successful stream is zero or more TextDelta/ReasoningDelta (and Retry before the first of
them), then at most one ToolCalls, at most one Usage, and one Finish. A failed stream ends
with one UpstreamError instead of Finish; the deltas already sent stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text as the model wrote it; may be invalid JSON


@dataclass(frozen=True, slots=True)
class ToolCalls:
    calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str  # the provider's raw finish_reason ("stop", "length", "tool_calls", ...)


@dataclass(frozen=True, slots=True)
class Retry:
    attempt: int  # 1 for the first retry
    delay: float  # seconds the client sleeps before it
    reason: str


# Kinds of UpstreamError, so callers can branch without string typos.
ERROR_KINDS = frozenset(
    {
        "auth",
        "not_found",
        "rate_limit",
        "budget",
        "bad_request",
        "server",
        "connect",
        "timeout",
        "protocol",
        "stream_error",
        "interrupted",
    }
)


@dataclass(frozen=True, slots=True)
class UpstreamError:
    kind: str  # one of ERROR_KINDS
    message: str  # plain words for the user; never contains the API key
    status: int | None = None
    retry_after: float | None = None


Event = TextDelta | ReasoningDelta | ToolCalls | Usage | Finish | Retry | UpstreamError

__all__ = [
    "ERROR_KINDS",
    "Event",
    "Finish",
    "ReasoningDelta",
    "Retry",
    "TextDelta",
    "ToolCall",
    "ToolCalls",
    "UpstreamError",
    "Usage",
]
