"""Conformance: recorded real provider responses, and transcripts of documented quirks.

Every case of ../shared/wire-captures/recorded.json is replayed byte for byte (same network
chunks, status and headers) through the fake upstream and the real client, and compared with
the case's `expect`. The same bodies are also decoded offline one byte at a time.

QUIRKS and MORE_QUIRKS add transcripts for what the five providers in ../shared/provider-docs
document and recorded.json does not cover, and SYSTEMS runs each of the seven systems of the
issue through its preset (providers/presets.py): the request it receives and its answers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from providers.chunks import ChunkInterpreter
from providers.client import ChatRequest, ProviderConfig, aclose_clients, stream_chat
from providers.events import (
    Event,
    Finish,
    ReasoningDelta,
    Retry,
    TextDelta,
    ToolCalls,
    UpstreamError,
    Usage,
)
from providers.params import request_params
from providers.presets import PRESETS
from providers.sse import SSEDecoder
from tests.fake_upstream import FakeUpstream, Script

REPO_ROOT = Path(__file__).resolve().parents[2]
RECORDED = REPO_ROOT / ".." / "shared" / "wire-captures" / "recorded.json"
REQUEST = ChatRequest(model="any", messages=[{"role": "user", "content": "Say hi"}])


def _recorded_cases() -> list[Any]:
    if not RECORDED.is_file():
        reason = f"recorded wire captures not found at {RECORDED.resolve()}"
        return [pytest.param(None, id="recorded-json-missing", marks=pytest.mark.skip(reason))]
    cases = json.loads(RECORDED.read_text(encoding="utf-8"))
    return [pytest.param(case, id=case["name"]) for case in cases]


RECORDED_CASES = _recorded_cases()


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    await aclose_clients()


def summarize(events: list[Event]) -> dict[str, Any]:
    """Events in the shape of a recorded case's `expect`."""
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    usages = [e for e in events if isinstance(e, Usage)]
    calls = [e for e in events if isinstance(e, ToolCalls)]
    finishes = [e for e in events if isinstance(e, Finish)]
    errors = [e for e in events if isinstance(e, UpstreamError)]
    assert len(usages) <= 1 and len(calls) <= 1 and len(finishes) + len(errors) == 1, events
    assert isinstance(events[-1], (Finish, UpstreamError)), events
    return {
        "content": text,
        "reasoning": reasoning or None,
        "finish_reason": finishes[0].reason if finishes else None,
        "usage": (
            {
                "prompt_tokens": usages[0].prompt_tokens,
                "completion_tokens": usages[0].completion_tokens,
                "total_tokens": usages[0].total_tokens,
            }
            if usages
            else None
        ),
        "tool_calls": (
            [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in calls[0].calls
            ]
            if calls
            else None
        ),
        "error": errors[0] if errors else None,
        "retries": sum(isinstance(e, Retry) for e in events),
    }


def assert_matches(summary: dict[str, Any], expect: dict[str, Any]) -> None:
    for key in ("content", "reasoning", "finish_reason", "usage", "tool_calls"):
        assert summary[key] == expect[key], key
    error: UpstreamError | None = summary["error"]
    expected_error = expect["error"]
    if expected_error is None:
        assert error is None, error
        return
    assert error is not None
    assert error.status == expected_error["status"]
    assert expected_error["message_substring"] in error.message
    if "type" in expected_error:
        assert expected_error["type"] in error.message
    if "kind" in expected_error:
        assert error.kind == expected_error["kind"]


def chunks_of(case: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(chunk) for chunk in case["body_chunks_b64"]]


async def replay(
    fake: FakeUpstream, status: int, headers: dict[str, str], chunks: list[bytes]
) -> list[Event]:
    fake.enqueue(Script.raw(status=status, headers=headers, chunks=chunks))
    config = ProviderConfig(
        base_url=fake.base_url,
        api_key="sk-wire-capture-key",
        first_byte_timeout=5,
        idle_timeout=5,
        total_timeout=20,
    )
    async with aclosing(stream_chat(config, REQUEST)) as stream:
        return [event async for event in stream]


@pytest.mark.parametrize("case", RECORDED_CASES)
async def test_recorded_case_through_the_client(
    fake_upstream: FakeUpstream, case: dict[str, Any]
) -> None:
    events = await replay(fake_upstream, case["http_status"], case["headers"], chunks_of(case))
    assert_matches(summarize(events), case["expect"])
    assert len(fake_upstream.requests) == 1  # none of these may be retried


def decode_offline(body: bytes, status: int = 200) -> list[Event]:
    """The client's reading of a body without the network, fed one byte at a time."""
    interpreter = ChunkInterpreter(status=status)
    events: list[Event] = []
    if body.lstrip()[:1] in (b"{", b"["):
        events += interpreter.feed_body(json.loads(body))
    else:
        decoder = SSEDecoder()
        sse_events = []
        for index in range(len(body)):
            sse_events += decoder.feed(body[index : index + 1])
        sse_events += decoder.close()
        for sse_event in sse_events:
            events += interpreter.feed_payload(sse_event.data)
            if interpreter.failed or interpreter.done:
                break
    if not interpreter.failed:
        events += interpreter.finish()
    return events


@pytest.mark.parametrize("case", RECORDED_CASES)
def test_recorded_case_decoded_byte_by_byte(case: dict[str, Any]) -> None:
    body = b"".join(chunks_of(case))
    assert_matches(summarize(decode_offline(body, case["http_status"])), case["expect"])


# -- documented quirks that the recordings do not cover ------------------------------------

SSE = {"content-type": "text/event-stream"}
JSON = {"content-type": "application/json"}


def sse(*events: object, done: bool = True, crlf: bool = False) -> list[bytes]:
    """One network chunk per event; dicts are sent as compact JSON, strings starting with ":"
    as comment lines, other strings as data."""
    end = "\r\n\r\n" if crlf else "\n\n"
    out = []
    for event in events:
        if isinstance(event, str) and event.startswith(":"):
            out.append(f"{event}{end}".encode())
            continue
        text = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
        out.append(f"data: {text}{end}".encode())
    if done:
        out.append(f"data: [DONE]{end}".encode())
    return out


def delta(content: object = None, finish: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if content is not None:
        body["content"] = content
    extra = {k: v for k, v in fields.items() if k not in ("usage", "stop_reason", "top")}
    body.update(extra)
    choice: dict[str, Any] = {"index": 0, "delta": body, "finish_reason": finish}
    if "stop_reason" in fields:
        choice["stop_reason"] = fields["stop_reason"]
    chunk: dict[str, Any] = {
        "id": "chatcmpl-q",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [choice],
    }
    if "usage" in fields:
        chunk["usage"] = fields["usage"]
    chunk.update(fields.get("top", {}))
    return chunk


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return {
        "id": "chatcmpl-q",
        "choices": [],
        "usage": usage | {"total_tokens": prompt + completion},
    }


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def expect(
    content: str = "",
    reasoning: str | None = None,
    finish_reason: str | None = "stop",
    usage: dict[str, int] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    error: dict[str, Any] | None = None,
    retries: int = 0,
    requests: int = 1,
) -> dict[str, Any]:
    return locals()


def tool(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


QUIRKS = [
    pytest.param(
        200,
        SSE,
        sse(
            {"id": "id_a", "model": "asi1-mini", "thought": "The user asks about giraffes."},
            {"id": "id_a", "model": "asi1-mini", "thought": " Keep it short.", "choices": []},
            delta("Giraffes", role="assistant"),
            delta(" are tall."),
            delta(finish="stop", stop_reason="stop", usage=usage(12, 4)),
        ),
        expect(
            "Giraffes are tall.", "The user asks about giraffes. Keep it short.", usage=usage(12, 4)
        ),
        id="asi1-thought-field-and-stop-reason",
    ),
    pytest.param(
        200,
        SSE,
        sse(delta("Short."), delta(finish=None, stop_reason="length")),
        expect("Short.", finish_reason="length"),
        id="asi1-stop-reason-without-finish-reason",
    ),
    pytest.param(
        200,
        SSE,
        sse(
            {"id": "", "choices": [], "created": 0, "model": ""},
            delta("", role="assistant"),
            delta("T-Cloud"),
            {"id": "chatcmpl-q", "choices": []},
            delta(" answers."),
            delta(finish="stop"),
            usage_chunk(21, 3),
        ),
        expect("T-Cloud answers.", usage=usage(21, 3)),
        id="tcloud-empty-choices-and-usage-chunk",
    ),
    pytest.param(
        429,
        JSON | {"retry-after": "1"},
        [
            json.dumps(
                {
                    "error": {
                        "message": "Budget has been exceeded! Current cost: 12.3, Max budget: 10.0",
                        "type": "budget_exceeded",
                    }
                }
            ).encode()
        ],
        expect(
            finish_reason=None,
            error={
                "status": 429,
                "kind": "budget",
                "message_substring": "Budget has been exceeded",
            },
        ),
        id="gateway-429-budget-exceeded-not-retried",
    ),
    pytest.param(
        400,
        JSON,
        [
            json.dumps(
                {
                    "error": {
                        "message": "The model `invalid-model` does not exist",
                        "type": "invalid_request_error",
                    }
                }
            ).encode()
        ],
        expect(
            finish_reason=None,
            error={"status": 400, "kind": "bad_request", "message_substring": "invalid-model"},
        ),
        id="gateway-invalid-model-400",
    ),
    pytest.param(
        429,
        JSON | {"retry-after": "0"},
        [json.dumps({"error": {"message": "Rate limit exceeded", "type": "rate_limit"}}).encode()],
        # retried once; the fake's default reply answers the second request
        expect("Hello, world!", usage=usage(10, 4), retries=1, requests=2),
        id="gateway-429-rate-limit-retried",
    ),
    pytest.param(
        200,
        SSE,
        sse(
            delta("", role="assistant"),
            delta("Grüezi. The next part"),
            delta(finish="content_filter"),
        ),
        expect("Grüezi. The next part", finish_reason="content_filter"),
        id="siati-content-filter",
    ),
    pytest.param(
        200,
        SSE,
        sse(
            delta(
                None,
                role="assistant",
                tool_calls=[
                    {
                        "index": 0,
                        "id": "call_ch",
                        "type": "function",
                        "function": {"name": "lookup_law", "arguments": ""},
                    }
                ],
            ),
            delta(tool_calls=[{"index": 0, "function": {"arguments": '{"law":'}}]),
            delta(tool_calls=[{"index": 0, "function": {"arguments": '"nFADP"}'}}]),
            delta(finish="tool_calls"),
            usage_chunk(30, 9),
        ),
        expect(
            finish_reason="tool_calls",
            usage=usage(30, 9),
            tool_calls=[tool("call_ch", "lookup_law", '{"law":"nFADP"}')],
        ),
        id="siati-tool-calls",
    ),
    pytest.param(
        200,
        SSE,
        sse(
            ":",
            delta(None, role="assistant"),
            delta(reasoning_content="Greet in "),
            delta(reasoning_content="Portuguese."),
            delta("Olá!"),
            delta(finish="stop"),
            usage_chunk(8, 5) | {"timings": {"predicted_n": 5}},
            done=False,
        ),
        expect("Olá!", "Greet in Portuguese.", usage=usage(8, 5)),
        id="llamacpp-reasoning-content-without-done",
    ),
    pytest.param(
        200,
        SSE,
        sse(
            delta("<th"),
            delta("ink>\nPlan the"),
            delta(" answer.\n</thi"),
            delta("nk>\n\nDone"),
            delta(finish="stop"),
            crlf=True,
        ),
        expect("Done", "Plan the answer.\n"),
        id="think-tags-in-content-split-across-chunks",
    ),
    pytest.param(
        200,
        SSE,
        sse(
            *(delta(f"t{i}", usage=usage(7, i)) for i in range(1, 6)),
            delta(finish="stop", usage=usage(7, 5)),
        ),
        expect("t1t2t3t4t5", usage=usage(7, 5)),
        id="usage-running-total-on-every-chunk",
    ),
    pytest.param(
        200,
        SSE,
        sse(
            delta("Part"),
            {
                "id": "gen-1",
                "error": {"code": 502, "message": "Provider disconnected"},
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
            },
            done=False,
        ),
        expect(
            "Part",
            finish_reason=None,
            error={
                "status": 200,
                "kind": "stream_error",
                "message_substring": "Provider disconnected",
            },
        ),
        id="openrouter-mid-stream-error-with-finish-reason-error",
    ),
]


@pytest.mark.parametrize(("status", "headers", "chunks", "expected"), QUIRKS)
async def test_provider_quirk(
    fake_upstream: FakeUpstream,
    status: int,
    headers: dict[str, str],
    chunks: list[bytes],
    expected: dict[str, Any],
) -> None:
    events = await replay(fake_upstream, status, headers, chunks)
    summary = summarize(events)
    assert_matches(summary, expected)
    assert summary["retries"] == expected["retries"]
    assert len(fake_upstream.requests) == expected["requests"]


# -- the rest of "what the client must get right", as transcripts ---------------------------

# A hand-cut stream exercising the SSE grammar through the client: a comment, retry/id/event
# fields, a blank data line, a UTF-8 character split between two network chunks, and one event
# carried by two data lines (joined with a newline, which JSON reads as whitespace).
_CAFE = "Café".encode()
SSE_GRAMMAR_CHUNKS = [
    b": keep-alive\r\n\r\n",
    b"retry: 3000\r\nid: 1\r\nevent: message\r\n"
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\r\n\r\n',
    b"data:\r\n\r\n",
    b'data: {"choices":[{"index":0,"delta":{"content":"' + _CAFE[:-1],
    _CAFE[-1:] + b'"}}]}\n\n',
    b'data: {"choices":[{"index":0,\ndata: "delta":{"content":" ok"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]

COMPLETION = {
    "id": "chatcmpl-json",
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "One body, no stream."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
}

MORE_QUIRKS = [
    pytest.param(
        200,
        SSE,
        SSE_GRAMMAR_CHUNKS,
        expect("Café ok"),
        id="sse-grammar-comment-fields-blank-data-split-utf8-multiline-data",
    ),
    pytest.param(
        200,
        JSON,
        [json.dumps(COMPLETION).encode()],
        expect("One body, no stream.", usage=usage(9, 5)),
        id="provider-ignores-stream-true-answers-one-json-body",
    ),
    pytest.param(
        200,
        SSE,
        sse(
            delta(None, role="assistant"),
            delta([{"type": "text", "text": "Typed "}, {"type": "text", "text": "parts"}]),
            delta(finish="stop"),
        ),
        expect("Typed parts"),
        id="content-as-a-list-of-typed-parts-and-no-usage-at-all",
    ),
    pytest.param(
        200,
        SSE,
        sse(
            delta("Counted"),
            delta(" once", usage=usage(4, 2)),
            delta(finish="stop", usage=usage(4, 2)),
            usage_chunk(4, 2) | {"x_groq": {"usage": usage(4, 2)}},
        ),
        expect("Counted once", usage=usage(4, 2)),
        id="usage-repeated-in-several-places-counted-once",
    ),
    pytest.param(
        500,
        {"content-type": "text/plain"},
        [b"upstream exploded"],
        expect(
            "Hello, world!", usage=usage(10, 4), retries=1, requests=2
        ),  # a 5xx before the first token is retried; the fake's default answers the retry
        id="http-500-plain-text-retried",
    ),
    pytest.param(
        401,
        {"content-type": "text/html"},
        [b"<html><head><title>401</title></head><body><h1>Unauthorized</h1></body></html>"],
        expect(
            finish_reason=None,
            error={"status": 401, "kind": "auth", "message_substring": "Unauthorized"},
        ),
        id="http-401-html-body",
    ),
    pytest.param(
        404,
        {},
        [],
        expect(
            finish_reason=None,
            error={"status": 404, "kind": "not_found", "message_substring": "empty body"},
        ),
        id="http-404-empty-body",
    ),
    pytest.param(
        200,
        JSON,
        [
            json.dumps(
                {"error": {"message": "Invalid API key", "type": "authentication_error"}}
            ).encode()
        ],
        expect(
            finish_reason=None,
            error={"status": 200, "kind": "auth", "message_substring": "Invalid API key"},
        ),
        id="http-200-whose-json-body-is-an-error",
    ),
]


@pytest.mark.parametrize(("status", "headers", "chunks", "expected"), MORE_QUIRKS)
async def test_more_quirks(
    fake_upstream: FakeUpstream,
    status: int,
    headers: dict[str, str],
    chunks: list[bytes],
    expected: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("providers.client.backoff_delay", lambda retry: 0.0)
    await test_provider_quirk(fake_upstream, status, headers, chunks, expected)


# -- the seven systems of the issue, configured from their presets ----------------------------
#
# Each system's preset sets up the client (whether to ask for usage in the stream, timeouts) and
# says which parameters its model accepts; the request the fake upstream recorded shows that what
# the system adds reaches it, and its transcript shows that its answers are understood.

OPENAI_CHUNK = {"id": "chatcmpl-o", "object": "chat.completion.chunk", "model": "gpt-4.1-mini"}


def openai_delta(content: str | None = None, finish: str | None = None, **d: Any) -> dict:
    body = dict(d)
    if content is not None:
        body["content"] = content
    # With include_usage, OpenAI puts "usage": null on every chunk, then a last chunk with
    # empty choices and the usage.
    return OPENAI_CHUNK | {
        "choices": [{"index": 0, "delta": body, "finish_reason": finish}],
        "usage": None,
    }


SYSTEMS = [
    pytest.param(
        "asi-cloud",
        {"temperature": 0.7, "top_k": 5},  # top_k is not among ASI Cloud's: not sent
        sse(
            delta("", role="assistant"),
            delta("Three gift ideas"),
            delta(": a book."),
            delta(finish="stop"),
            usage_chunk(25, 6),
        ),
        expect("Three gift ideas: a book.", usage=usage(25, 6)),
        {"temperature": 0.7, "max_tokens": 200},
        id="asi-cloud-plain-chat-with-system-prompt",
    ),
    pytest.param(
        "gateway",
        {"top_k": 40, "frequency_penalty": 0.5, "presence_penalty": -0.5, "stop": ["\n\n"]},
        sse(delta("", role="assistant"), delta("Hello!"), delta(finish="stop"), usage_chunk(12, 2)),
        expect("Hello!", usage=usage(12, 2)),
        {
            "top_k": 40,
            "frequency_penalty": 0.5,
            "presence_penalty": -0.5,
            "stop": ["\n\n"],
            "max_tokens": 200,
        },
        id="gateway-top-k-penalties-stop",
    ),
    pytest.param(
        "asi1-mini",
        {"temperature": 0.2},
        sse(
            {"id": "a", "model": "asi1-mini", "thought": "Giraffes: keep it short."},
            delta("Giraffes are tall.", role="assistant"),
            delta(finish="stop", stop_reason="stop"),
        ),
        expect("Giraffes are tall.", "Giraffes: keep it short."),
        {"temperature": 0.2, "max_tokens": 200},
        id="asi1-mini-thought-and-stop-reason",
    ),
    pytest.param(
        "siati",
        {"seed": 42, "json_mode": True},
        sse(
            delta(
                None,
                role="assistant",
                tool_calls=[
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q":'},
                    }
                ],
            ),
            delta(tool_calls=[{"index": 0, "function": {"arguments": '"nFADP"}'}}]),
            delta(finish="tool_calls"),
        ),
        expect(
            finish_reason="tool_calls",
            tool_calls=[tool("call_1", "lookup", '{"q":"nFADP"}')],
        ),
        {"seed": 42, "response_format": {"type": "json_object"}, "max_tokens": 200},
        id="siati-seed-json-mode-tool-calls",
    ),
    pytest.param(
        "t-cloud",
        {},
        sse(
            {"id": "", "choices": [], "created": 0, "model": ""},
            delta("", role="assistant"),
            delta("Guten Tag."),
            {"id": "x", "choices": []},
            delta(finish="stop"),
            usage_chunk(30, 3),
        ),
        expect("Guten Tag.", usage=usage(30, 3)),
        {"max_tokens": 200},
        id="t-cloud-empty-choices-usage-in-stream",
    ),
    pytest.param(
        "local",
        {"top_k": 20, "seed": 1},
        sse(
            delta(None, role="assistant"),
            delta("<think>Short"),
            delta(" answer.</think>"),
            delta("Olá!"),
            delta(finish="length"),
            done=False,
        ),
        expect("Olá!", "Short answer.", finish_reason="length"),
        {"top_k": 20, "seed": 1, "max_tokens": 200},
        id="local-think-tags-length-no-done",
    ),
    pytest.param(
        "openai",
        {"temperature": 1.0},
        sse(
            openai_delta("", role="assistant", refusal=None),
            openai_delta("Hi"),
            openai_delta(" there."),
            openai_delta(finish="stop"),
            OPENAI_CHUNK | {"choices": [], "usage": usage(11, 3)},
        ),
        expect("Hi there.", usage=usage(11, 3)),
        {"temperature": 1.0, "max_tokens": 200},
        id="openai-include-usage-null-usage-on-every-chunk",
    ),
]


@pytest.mark.parametrize(("preset_key", "chosen", "chunks", "expected", "sent_params"), SYSTEMS)
async def test_each_system_through_its_preset(
    fake_upstream: FakeUpstream,
    preset_key: str,
    chosen: dict[str, Any],
    chunks: list[bytes],
    expected: dict[str, Any],
    sent_params: dict[str, Any],
) -> None:
    preset = PRESETS[preset_key]
    model = preset.models[0] if preset.models else preset.fetched
    fake_upstream.enqueue(Script.raw(headers=SSE, chunks=chunks))
    config = ProviderConfig(
        base_url=fake_upstream.base_url,
        api_key="sk-system",
        include_usage=preset.include_usage,
        connect_timeout=preset.connect_timeout,
        first_byte_timeout=min(preset.first_byte_timeout, 5),
        idle_timeout=min(preset.idle_timeout, 5),
        total_timeout=min(preset.total_timeout, 20),
    )
    request = ChatRequest(
        model=model.name or "local-model",
        messages=[
            {"role": "system", "content": "You are brief."},
            {"role": "user", "content": "Hello"},
        ],
        params=request_params(
            defaults={},
            chosen=chosen,
            accepted=model.accepted_params,
            json_mode_allowed=model.accepts_json_mode,
            max_tokens=200,
            max_tokens_key=model.max_tokens_param,
        ),
    )
    async with aclosing(stream_chat(config, request)) as stream:
        events = [event async for event in stream]
    assert_matches(summarize(events), expected)

    [sent] = fake_upstream.requests
    body = dict(sent.json)
    assert body.pop("messages")[0] == {"role": "system", "content": "You are brief."}
    assert body.pop("model") == request.model
    assert body.pop("stream") is True
    # Every preset asks for usage in the stream (the client stops asking a server that refuses).
    assert body.pop("stream_options") == {"include_usage": True}
    assert body == sent_params
