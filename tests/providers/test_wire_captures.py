"""Conformance: recorded real provider responses, and transcripts of documented quirks.

Every case of ../shared/wire-captures/recorded.json is replayed byte for byte (same network
chunks, status and headers) through the fake upstream and the real client, and compared with
the case's `expect`. The same bodies are also decoded offline one byte at a time.

QUIRKS adds transcripts for what the five providers in ../shared/provider-docs document and
recorded.json does not cover.
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
