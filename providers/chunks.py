"""Chat Completions chunks (and whole bodies) normalized into our events.

Every provider shape this product knows about is handled here and nowhere else:

- "[DONE]"; role-only first deltas; chunks whose choices are empty (usage-only final chunk,
  Azure prompt-filter results) or have no delta at all (Azure annotations after the finish);
- finish_reason arriving on its own chunk, twice (OpenRouter), or followed by chunks whose
  finish_reason is null again (the first non-null value is not reset); ASI-1's stop_reason;
- usage on the last chunk, on every chunk as a running total (xAI), repeated (Groq, also
  under x_groq), or never: the last snapshot is reported once, never a sum;
- reasoning as delta.reasoning_content (llama.cpp, vLLM, DeepSeek), delta.reasoning
  (OpenRouter; its reasoning_details repeat the same text and are ignored), a top-level
  "thought" (ASI-1 Mini), or <think>...</think> at the start of the content;
- tool_calls deltas assembled by index; content as a list of typed parts; refusals;
- an error object in a data: line; a non-streaming body when the provider ignored stream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import classify_error_object, error_object_message, scrub, truncate
from .events import (
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCalls,
    UpstreamError,
    Usage,
)

__all__ = ["ChunkInterpreter", "ThinkTagSplitter", "parse_usage"]

# stop_reason values that are really finish reasons. vLLM also sends stop_reason, but there it
# is the matched stop string or token id, which must not become the finish reason.
_FINISH_WORDS = frozenset(
    {"stop", "length", "tool_calls", "content_filter", "function_call", "end_turn", "max_tokens"}
)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return None


def parse_usage(raw: object) -> Usage | None:
    """A Usage from an OpenAI-style usage object (input_/output_tokens accepted too)."""
    if not isinstance(raw, Mapping):
        return None
    prompt = _int_or_none(raw.get("prompt_tokens", raw.get("input_tokens")))
    completion = _int_or_none(raw.get("completion_tokens", raw.get("output_tokens")))
    total = _int_or_none(raw.get("total_tokens"))
    if prompt is None and completion is None and total is None:
        return None
    return Usage(prompt, completion, total)


class ThinkTagSplitter:
    """Separates a leading <think>...</think> block in streamed content from the answer.

    Tags may be split across chunks anywhere ("<th" + "ink>"). A <think> is recognized only
    before any answer text, so an answer that talks about the tag is left alone.
    """

    __slots__ = ("_mode", "_pending")

    _OPEN = "<think>"
    _CLOSE = "</think>"

    def __init__(self) -> None:
        self._mode = "start"  # start -> (think -> after ->) answer
        self._pending = ""

    def feed(self, text: str) -> list[Event]:
        if self._mode == "answer":  # the hot path once the answer has begun
            return [TextDelta(text)] if text else []
        buf = self._pending + text
        self._pending = ""
        events: list[Event] = []
        while buf:
            if self._mode == "start":
                stripped = buf.lstrip()
                if not stripped or self._OPEN.startswith(stripped):
                    self._pending = buf  # undecided: whitespace or a partial "<think>"
                    break
                if stripped.startswith(self._OPEN):
                    self._mode = "think"
                    buf = stripped[len(self._OPEN) :].lstrip()
                    continue
                self._mode = "answer"
                events.append(TextDelta(buf))
                break
            if self._mode == "think":
                end = buf.find(self._CLOSE)
                if end >= 0:
                    if end:
                        events.append(ReasoningDelta(buf[:end]))
                    self._mode = "after"
                    buf = buf[end + len(self._CLOSE) :]
                    continue
                keep = _partial_suffix(buf, self._CLOSE)
                if keep:
                    self._pending = buf[-keep:]
                    buf = buf[:-keep]
                if buf:
                    events.append(ReasoningDelta(buf))
                break
            # after </think>: drop the blank lines that separate it from the answer
            buf = buf.lstrip()
            if buf:
                self._mode = "answer"
                events.append(TextDelta(buf))
            break
        return events

    def flush(self) -> list[Event]:
        pending, self._pending = self._pending, ""
        if not pending:
            return []
        if self._mode == "think":
            return [ReasoningDelta(pending)]
        return [TextDelta(pending)]


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest proper prefix of tag that text ends with."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class _ToolCallParts:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


class ChunkInterpreter:
    """Stateful per stream: feed SSE data payloads, then call finish() on success.

    feed_payload()/feed_chunk() return the deltas at once. ToolCalls, Usage and Finish only
    come from finish(), which the client calls when the stream ended well. After an
    UpstreamError has been returned, further input is ignored.
    """

    def __init__(self, *, status: int = 200, api_key: str = "") -> None:
        self.status = status  # the HTTP status, reported on in-band errors
        self._api_key = api_key
        self._think = ThinkTagSplitter()
        self._tools: dict[int, _ToolCallParts] = {}
        self._tool_ids: dict[str, int] = {}
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False  # "[DONE]" seen
        self.failed = False  # an UpstreamError was returned
        self.has_output = False  # a delta (or tool call fragment) reached the caller

    # -- input -------------------------------------------------------------------------

    def feed_payload(self, data: str) -> list[Event]:
        """One SSE data payload: "[DONE]", a JSON chunk, or an error object."""
        if self.failed or self.done:
            return []
        data = data.strip()
        if not data:
            return []
        if data == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError:
            return self._fail(
                "protocol",
                "The provider sent a stream chunk that is not JSON: " + truncate(data, 200),
            )
        return self.feed_chunk(chunk)

    def feed_chunk(self, chunk: object) -> list[Event]:
        """One parsed chunk of a stream."""
        if self.failed:
            return []
        if not isinstance(chunk, Mapping):
            return self._fail("protocol", "The provider sent a stream chunk that is not an object.")
        if chunk.get("error"):
            return self._in_band_error(chunk["error"], fallback_kind="stream_error")
        events: list[Event] = []
        usage = parse_usage(chunk.get("usage"))
        if usage is None and isinstance(chunk.get("x_groq"), Mapping):
            usage = parse_usage(chunk["x_groq"].get("usage"))
        if usage is not None:
            self.usage = usage
        thought = chunk.get("thought")
        if thought:
            text = "\n".join(map(str, thought)) if isinstance(thought, list) else str(thought)
            self._emit(events, ReasoningDelta(text))
        choice = _first_choice(chunk.get("choices"))
        if choice is None:
            return events
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            self._read_message(delta, events)
        elif isinstance(choice.get("message"), Mapping):
            # A provider that ignored stream:true may still send its whole answer as one chunk.
            self._read_message(choice["message"], events)
        elif isinstance(choice.get("text"), str):  # legacy completions shape
            self._content(choice["text"], events)
        self._read_finish(choice)
        return events

    def feed_body(self, body: object) -> list[Event]:
        """A whole non-streaming JSON body (the provider ignored stream: true)."""
        if isinstance(body, Mapping) and body.get("error") and not body.get("choices"):
            # HTTP 200 with an error object: take its kind if it names one.
            return self._in_band_error(body["error"], fallback_kind="protocol")
        if not isinstance(body, Mapping) or not isinstance(body.get("choices"), list):
            return self._fail("protocol", "The provider answered with JSON that has no choices.")
        return self.feed_chunk(body)

    def finish(self) -> list[Event]:
        """The closing events of a successful stream: ToolCalls, Usage, Finish."""
        events = self._think.flush()
        if events:
            self.has_output = True
        if self._tools:
            calls = tuple(
                ToolCall(id=parts.id, name=parts.name, arguments="".join(parts.arguments))
                for _, parts in sorted(self._tools.items())
            )
            events.append(ToolCalls(calls))
        if self.usage is not None:
            events.append(self.usage)
        events.append(Finish(self.finish_reason or "stop"))
        return events

    # -- pieces ------------------------------------------------------------------------

    def _emit(self, events: list[Event], event: Event) -> None:
        self.has_output = True
        events.append(event)

    def _content(self, text: str, events: list[Event]) -> None:
        if text:
            produced = self._think.feed(text)
            if produced:
                self.has_output = True
                events.extend(produced)

    def _read_message(self, message: Mapping[str, Any], events: list[Event]) -> None:
        # One source of reasoning only: OpenRouter repeats delta.reasoning inside
        # reasoning_details, and some servers send reasoning and reasoning_content alike.
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._emit(events, ReasoningDelta(reasoning))
        content = message.get("content")
        if isinstance(content, str):
            self._content(content, events)
        elif isinstance(content, list):
            self._content_parts(content, events)
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._content(refusal, events)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            for position, call in enumerate(tool_calls):
                if isinstance(call, Mapping):
                    self._tool_call(call, position)
        elif isinstance(message.get("function_call"), Mapping):  # the pre-tools shape
            self._tool_call({"index": 0, "function": message["function_call"]}, 0)

    def _content_parts(self, parts: list[Any], events: list[Event]) -> None:
        for part in parts:
            if isinstance(part, str):
                self._content(part, events)
                continue
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind in ("thinking", "reasoning"):
                text = _part_text(part.get(kind) or part.get("text"))
                if text:
                    self._emit(events, ReasoningDelta(text))
            elif kind in (None, "text", "output_text"):
                text = _part_text(part.get("text"))
                if text:
                    self._content(text, events)

    def _tool_call(self, call: Mapping[str, Any], position: int) -> None:
        call_id = call.get("id") if isinstance(call.get("id"), str) else ""
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            # No index (some gateways): a new id starts a new call, no id continues the last.
            if call_id and call_id not in self._tool_ids:
                index = len(self._tools)
            elif call_id:
                index = self._tool_ids[call_id]
            else:
                index = max(self._tools, default=position)
        parts = self._tools.get(index)
        if parts is None:
            parts = self._tools[index] = _ToolCallParts()
        if call_id:
            parts.id = call_id
            self._tool_ids[call_id] = index
        function = call.get("function")
        if isinstance(function, Mapping):
            name = function.get("name")
            if isinstance(name, str) and name:
                parts.name = name  # some providers repeat the name on every fragment
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                parts.arguments.append(arguments)
            elif isinstance(arguments, Mapping):  # a few servers send an object
                parts.arguments.append(json.dumps(arguments, ensure_ascii=False))
        self.has_output = True

    def _read_finish(self, choice: Mapping[str, Any]) -> None:
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self.finish_reason = reason
            return
        stop_reason = choice.get("stop_reason")
        if isinstance(stop_reason, str) and stop_reason in _FINISH_WORDS:
            self.finish_reason = stop_reason

    def _in_band_error(self, error: object, *, fallback_kind: str) -> list[Event]:
        kind = classify_error_object(error)
        if kind is None or (kind == "server" and fallback_kind == "stream_error"):
            # A server error in the middle of a stream is exactly what stream_error means;
            # only a more specific kind (budget, rate limit, auth...) replaces it.
            kind = fallback_kind
        text = truncate(scrub(error_object_message(error), self._api_key))
        where = "in the middle of the stream" if fallback_kind == "stream_error" else ""
        prefix = f"The provider reported an error {where}".rstrip()
        message = f"{prefix}: {text}" if text else f"{prefix}."
        return self._fail(kind, message)

    def _fail(self, kind: str, message: str) -> list[Event]:
        self.failed = True
        return [UpstreamError(kind=kind, message=message, status=self.status)]


def _first_choice(choices: object) -> Mapping[str, Any] | None:
    """The choice with index 0 (we never ask for n > 1)."""
    if not isinstance(choices, list) or not choices:
        return None
    for choice in choices:
        if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
            return choice
    return None


def _part_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # Mistral: {"type": "thinking", "thinking": [{"text": ...}]}
        return "".join(_part_text(item) for item in value)
    if isinstance(value, Mapping):
        return _part_text(value.get("text"))
    return ""
