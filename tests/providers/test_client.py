"""stream_chat, list_models and check_connection against the fake upstream (real HTTP)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from providers import client as client_module
from providers.client import (
    ChatRequest,
    ProviderConfig,
    aclose_clients,
    check_connection,
    get_client,
    list_models,
    stream_chat,
)
from providers.deadline import ReadDeadline
from providers.errors import ProviderRequestError, extract_error_text
from providers.events import (
    Event,
    Finish,
    ReasoningDelta,
    Retry,
    TextDelta,
    ToolCall,
    ToolCalls,
    UpstreamError,
    Usage,
)
from providers.retry import backoff_delay, parse_retry_after
from tests.fake_upstream import FakeUpstream, Script

API_KEY = "sk-test-4f9a8b7c6d5e4f3a2b1c"
REQUEST = ChatRequest(model="fake-model", messages=[{"role": "user", "content": "Hi"}])


@pytest.fixture(autouse=True)
async def _fresh_client() -> AsyncIterator[None]:
    client_module._NO_STREAM_OPTIONS.clear()
    yield
    await aclose_clients()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "backoff_delay", lambda retry_number: 0.01)


def make_config(fake: FakeUpstream, **overrides: Any) -> ProviderConfig:
    options: dict[str, Any] = {
        "base_url": fake.base_url,
        "api_key": API_KEY,
        "connect_timeout": 2,
        "first_byte_timeout": 2,
        "idle_timeout": 2,
        "total_timeout": 10,
        "max_retries": 2,
    }
    options.update(overrides)
    return ProviderConfig(**options)


@dataclass
class Result:
    events: list[Event] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    @property
    def reasoning(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, ReasoningDelta))

    @property
    def retries(self) -> list[Retry]:
        return [e for e in self.events if isinstance(e, Retry)]

    @property
    def last(self) -> Event:
        return self.events[-1]

    @property
    def error(self) -> UpstreamError:
        assert isinstance(self.last, UpstreamError), self.events
        return self.last

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


async def collect(config: ProviderConfig, request: ChatRequest = REQUEST) -> Result:
    result = Result()
    started = time.perf_counter()
    async with aclosing(stream_chat(config, request)) as events:
        async for event in events:
            result.events.append(event)
    result.elapsed = time.perf_counter() - started
    return result


def assert_well_formed(result: Result) -> None:
    """Deltas and retries, then at most one ToolCalls and Usage, then exactly one end."""
    ends = [e for e in result.events if isinstance(e, (Finish, UpstreamError))]
    assert len(ends) == 1 and result.events[-1] is ends[0], result.events
    assert len(result.of(Usage)) <= 1
    assert len(result.of(ToolCalls)) <= 1


# -- success ----------------------------------------------------------------------------


async def test_streams_text_usage_and_finish(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.stream(["Hel", "lo"], reasoning=["Think", "ing"]))
    result = await collect(make_config(fake_upstream))
    assert result.events == [
        ReasoningDelta("Think"),
        ReasoningDelta("ing"),
        TextDelta("Hel"),
        TextDelta("lo"),
        Usage(10, 4, 14),
        Finish("stop"),
    ]


async def test_request_body_and_headers(fake_upstream: FakeUpstream) -> None:
    request = ChatRequest(
        model="fake-model",
        messages=[{"role": "user", "content": "Grüß dich"}],
        params={"temperature": 0.2, "max_tokens": 50, "top_p": None},
    )
    config = make_config(fake_upstream, extra_headers={"X-Title": "teamchat"})
    await collect(config, request)
    [sent] = fake_upstream.requests
    assert sent.method == "POST"
    assert sent.path == "/v1/chat/completions"
    assert sent.json == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "Grüß dich"}],
        "temperature": 0.2,
        "max_tokens": 50,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["x-title"] == "teamchat"
    assert sent.headers["content-type"] == "application/json"


async def test_no_authorization_header_without_a_key(fake_upstream: FakeUpstream) -> None:
    await collect(make_config(fake_upstream, api_key="", include_usage=False))
    [sent] = fake_upstream.requests
    assert "authorization" not in sent.headers
    assert "stream_options" not in sent.json


async def test_stream_options_rejected_is_retried_once_without_them(
    fake_upstream: FakeUpstream,
) -> None:
    rejection = {"error": {"message": "Unrecognized request argument supplied: stream_options"}}
    fake_upstream.enqueue(Script.error(400, rejection), Script.stream(["ok"], usage=None))
    result = await collect(make_config(fake_upstream))
    assert result.text == "ok"
    assert result.retries == []
    first, second = fake_upstream.requests
    assert "stream_options" in first.json
    assert "stream_options" not in second.json
    # Remembered for this provider: the next call does not pay for the failed request.
    await collect(make_config(fake_upstream))
    assert "stream_options" not in fake_upstream.requests[-1].json


async def test_other_400_is_not_mistaken_for_stream_options(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.error(400, {"error": {"message": "messages must not be empty"}}))
    result = await collect(make_config(fake_upstream))
    assert result.error.kind == "bad_request"
    assert len(fake_upstream.requests) == 1


async def test_crlf_stream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.stream(["a", "b"], crlf=True))
    result = await collect(make_config(fake_upstream))
    assert result.text == "ab"
    assert result.last == Finish("stop")


async def test_running_usage_on_every_chunk_gives_one_usage(fake_upstream: FakeUpstream) -> None:
    # Usage as a running total on every chunk (xAI), then the final usage chunk: summing
    # would report far more than 3 completion tokens.
    fake_upstream.enqueue(Script.stream(["a", "b", "c"], usage_every_chunk=True))
    result = await collect(make_config(fake_upstream))
    assert result.of(Usage) == [Usage(10, 3, 13)]


async def test_tool_calls_streamed_in_fragments(fake_upstream: FakeUpstream) -> None:
    calls = [{"id": "call_1", "name": "weather", "arguments": '{"location":"Florence"}'}]
    fake_upstream.enqueue(Script.stream([], tool_calls=calls, finish_reason="tool_calls"))
    result = await collect(make_config(fake_upstream))
    assert result.of(ToolCalls) == [
        ToolCalls((ToolCall("call_1", "weather", '{"location":"Florence"}'),))
    ]
    assert result.last == Finish("tool_calls")


async def test_stream_without_done_after_finish_reason_is_a_success(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.enqueue(Script.stream(["a", "b"], then="eof"))
    result = await collect(make_config(fake_upstream))
    assert result.text == "ab"
    assert result.events[-2:] == [Usage(10, 2, 12), Finish("stop")]


async def test_clean_eof_without_done_or_finish_reason_is_a_success(
    fake_upstream: FakeUpstream,
) -> None:
    # Some llama.cpp builds end the body without [DONE]; a clean end is not an interruption.
    fake_upstream.enqueue(Script.stream(["a", "b"], then="eof", finish_reason=None, usage=None))
    result = await collect(make_config(fake_upstream))
    assert result.text == "ab"
    assert result.last == Finish("stop")


async def test_final_event_without_trailing_newline(fake_upstream: FakeUpstream) -> None:
    body = [
        b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}\n\n',
        b"data: [DONE]",
    ]
    fake_upstream.enqueue(Script.raw(headers={"content-type": "text/event-stream"}, chunks=body))
    result = await collect(make_config(fake_upstream))
    assert result.events == [TextDelta("x"), Finish("stop")]


async def test_non_streaming_json_body_for_a_stream_request(fake_upstream: FakeUpstream) -> None:
    completion = {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Olá!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
    }
    fake_upstream.enqueue(Script.json(completion))
    result = await collect(make_config(fake_upstream))
    assert result.events == [TextDelta("Olá!"), Usage(20, 2, 22), Finish("stop")]


async def test_json_body_sent_as_event_stream_content_type(fake_upstream: FakeUpstream) -> None:
    body = json.dumps({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]})
    fake_upstream.enqueue(
        Script.raw(headers={"content-type": "text/event-stream"}, chunks=[body.encode()])
    )
    result = await collect(make_config(fake_upstream))
    assert result.events == [TextDelta("hi"), Finish("stop")]


async def test_many_concurrent_streams(fake_upstream: FakeUpstream) -> None:
    fake_upstream.default = Script.tokens(20, delay=0.001)
    config = make_config(fake_upstream)
    results = await asyncio.gather(*(collect(config) for _ in range(50)))
    expected = "".join(f"tok{i} " for i in range(20))
    assert all(r.text == expected and r.last == Finish("stop") for r in results)


# -- HTTP errors ------------------------------------------------------------------------

OPENAI_401 = {
    "error": {
        "message": "Incorrect API key provided: sk-test-****2b1c.",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}
HTML_500 = (
    "<!DOCTYPE html><html><head><title>500 Internal Server Error</title>"
    "<style>body { color: red }</style><script>var x = 1;</script></head>"
    "<body><h1>Internal Server Error</h1><p>The server encountered an &amp; error.</p>"
    + "<p>padding</p>" * 200
    + "</body></html>"
)


@pytest.mark.parametrize(
    ("status", "body", "kind", "expected"),
    [
        (401, OPENAI_401, "auth", "Incorrect API key provided"),
        (403, {"error": "Forbidden for this team"}, "auth", "Forbidden for this team"),
        (
            404,
            {
                "error": {
                    "message": "The model `nope` does not exist",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                }
            },
            "not_found",
            "`nope`",
        ),
        (
            429,
            {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}},
            "rate_limit",
            "Rate limit reached",
        ),
        (
            429,
            {
                "error": {
                    "message": "Budget has been exceeded! Current cost: 10.2",
                    "type": "budget_exceeded",
                }
            },
            "budget",
            "Budget has been exceeded",
        ),
        (
            429,
            {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota"}},
            "budget",
            "current quota",
        ),
        (402, {"message": "Payment required"}, "budget", "Payment required"),
        (400, {"error": {"message": "Insufficient balance"}}, "budget", "Insufficient balance"),
        (400, {"error": {"message": "max_tokens is too large"}}, "bad_request", "max_tokens"),
        (
            422,
            {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
            "bad_request",
            "messages: field required",
        ),
        (422, {"detail": "Unprocessable"}, "bad_request", "Unprocessable"),
        (500, HTML_500, "server", "Internal Server Error The server encountered an & error."),
        (502, None, "server", "HTTP 502 with an empty body"),
        (503, "upstream connect error", "server", "upstream connect error"),
        (500, b"\x00\xff binary", "server", "binary"),
    ],
)
async def test_error_bodies(
    fake_upstream: FakeUpstream,
    fast_backoff: None,
    status: int,
    body: Any,
    kind: str,
    expected: str,
) -> None:
    fake_upstream.enqueue(Script.error(status, body))
    result = await collect(make_config(fake_upstream, max_retries=0))
    error = result.error
    assert error.kind == kind
    assert error.status == status
    assert expected in error.message
    assert "<" not in error.message and "var x" not in error.message
    assert len(error.message) < 420
    assert_well_formed(result)


async def test_api_key_never_appears_in_error_messages(fake_upstream: FakeUpstream) -> None:
    # The fake echoes the full key it received, as some gateways do.
    fake_upstream.api_key = "sk-the-right-key-000000"
    result = await collect(make_config(fake_upstream))
    assert result.error.kind == "auth"
    assert "Incorrect API key provided" in result.error.message
    assert API_KEY not in result.error.message
    assert API_KEY not in repr(make_config(fake_upstream))

    fake_upstream.api_key = None
    fake_upstream.enqueue(Script.error(500, f"crash while using Authorization: Bearer {API_KEY}"))
    result = await collect(make_config(fake_upstream, max_retries=0))
    assert API_KEY not in result.error.message
    assert "Bearer [redacted]" in result.error.message


def test_extract_error_text_shapes() -> None:
    assert extract_error_text(b"") == ""
    assert extract_error_text(b'{"error": "text"}') == "text"
    assert extract_error_text(b'{"message": "m"}') == "m"
    assert extract_error_text(b'{"detail": {"why": 1}}') == '{"why": 1}'
    assert extract_error_text(b'[{"error": {"message": "in a list"}}]') == "in a list"
    assert extract_error_text(b'{"unknown": 1}') == '{"unknown": 1}'
    long = extract_error_text(b"x" * 1000)
    assert len(long) <= 300 and long.endswith("…")


# -- retries ----------------------------------------------------------------------------


async def test_retry_after_seconds_is_honoured(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(
        Script.error(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.3"}),
        Script.stream(["ok"]),
    )
    result = await collect(make_config(fake_upstream))
    assert result.retries == [Retry(attempt=1, delay=0.3, reason="HTTP 429")]
    assert result.elapsed >= 0.3
    assert result.text == "ok"
    assert len(fake_upstream.requests) == 2


async def test_retry_after_ms_is_honoured(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.error(503, None, {"retry-after-ms": "50"}), Script.stream(["ok"]))
    result = await collect(make_config(fake_upstream))
    assert [r.delay for r in result.retries] == [0.05]


async def test_retry_after_beyond_the_cap_fails_at_once(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(
        Script.error(429, {"error": {"message": "Too many requests"}}, {"Retry-After": "120"})
    )
    result = await collect(make_config(fake_upstream, retry_after_cap=20))
    assert result.retries == []
    assert result.error.kind == "rate_limit"
    assert result.error.retry_after == 120
    assert "asks to retry in 120 s" in result.error.message
    assert result.elapsed < 1
    assert len(fake_upstream.requests) == 1


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == 90
    assert parse_retry_after({"retry-after": "7"}) == 7
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after": "-3"}) == 0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    past = format_datetime(now - timedelta(seconds=5), usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(1)
    for retry_number, step in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        delays = [backoff_delay(retry_number, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 4  # jittered, not constant


async def test_budget_is_never_retried(fake_upstream: FakeUpstream, fast_backoff: None) -> None:
    budget = {"error": {"message": "Budget has been exceeded!", "type": "budget_exceeded"}}
    fake_upstream.enqueue(Script.error(429, budget, {"Retry-After": "0"}), Script.stream(["no"]))
    result = await collect(make_config(fake_upstream))
    assert result.error.kind == "budget"
    assert result.retries == []
    assert len(fake_upstream.requests) == 1


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried(
    fake_upstream: FakeUpstream, fast_backoff: None, status: int
) -> None:
    fake_upstream.enqueue(Script.error(status, None), Script.stream(["ok"]))
    result = await collect(make_config(fake_upstream))
    assert result.text == "ok"
    assert [r.attempt for r in result.retries] == [1]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retried(
    fake_upstream: FakeUpstream, fast_backoff: None, status: int
) -> None:
    fake_upstream.enqueue(Script.error(status, {"error": {"message": "no"}}), Script.stream(["x"]))
    result = await collect(make_config(fake_upstream))
    assert isinstance(result.last, UpstreamError)
    assert result.retries == []
    assert len(fake_upstream.requests) == 1


async def test_retries_stop_at_max_retries(fake_upstream: FakeUpstream, fast_backoff: None) -> None:
    fake_upstream.enqueue(*[Script.error(500, {"error": {"message": "boom"}})] * 4)
    result = await collect(make_config(fake_upstream, max_retries=2))
    assert [r.attempt for r in result.retries] == [1, 2]
    assert result.error.kind == "server"
    assert "Gave up after 3 attempts" in result.error.message
    assert len(fake_upstream.requests) == 3
    assert_well_formed(result)


async def test_uses_backoff_without_retry_after(
    fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []

    def fake_backoff(retry_number: int) -> float:
        seen.append(retry_number)
        return 0.02

    monkeypatch.setattr(client_module, "backoff_delay", fake_backoff)
    fake_upstream.enqueue(Script.error(502, None), Script.error(502, None), Script.stream(["ok"]))
    result = await collect(make_config(fake_upstream))
    assert seen == [1, 2]
    assert [r.delay for r in result.retries] == [0.02, 0.02]
    assert result.text == "ok"


async def test_no_retry_after_the_first_token(
    fake_upstream: FakeUpstream, fast_backoff: None
) -> None:
    fake_upstream.enqueue(Script.stream(["Partial", " answer"], then="close"), Script.stream(["x"]))
    result = await collect(make_config(fake_upstream))
    assert result.text == "Partial answer"
    assert result.error.kind == "interrupted"
    assert "broke off in the middle" in result.error.message
    assert result.retries == []
    assert len(fake_upstream.requests) == 1


async def test_connection_dropped_before_the_first_token_is_retried(
    fake_upstream: FakeUpstream, fast_backoff: None
) -> None:
    fake_upstream.enqueue(Script.stream([], then="close"), Script.stream(["second try"]))
    result = await collect(make_config(fake_upstream))
    assert result.text == "second try"
    assert len(result.retries) == 1
    assert len(fake_upstream.requests) == 2


async def test_connect_error(fast_backoff: None) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ProviderConfig(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY)
    result = await collect(config)
    assert result.error.kind == "connect"
    assert "127.0.0.1" in result.error.message
    assert [r.reason for r in result.retries] == ["connection failed"] * 2


async def test_redirect_is_not_followed(fake_upstream: FakeUpstream) -> None:
    location = {"Location": "https://api.example.com/v1/chat/completions"}
    fake_upstream.enqueue(Script.error(301, None, location))
    result = await collect(make_config(fake_upstream))
    assert result.error.kind == "protocol"
    assert "redirects to https://api.example.com/v1/chat/completions" in result.error.message
    assert "Check the base URL" in result.error.message
    assert len(fake_upstream.requests) == 1

    fake_upstream.enqueue(Script.error(308, None, location), route="models")
    with pytest.raises(ProviderRequestError, match="redirects to"):
        await list_models(make_config(fake_upstream))


async def test_invalid_base_url() -> None:
    result = await collect(ProviderConfig(base_url="ftp://example.invalid/v1"))
    assert result.error.kind == "connect"
    assert result.retries == []


# -- timeouts ---------------------------------------------------------------------------


async def test_first_byte_timeout(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.hang())
    config = make_config(fake_upstream, first_byte_timeout=0.3, max_retries=0)
    result = await collect(config)
    assert result.error.kind == "timeout"
    assert "did not answer within 0.3 s" in result.error.message
    assert 0.25 < result.elapsed < 2
    assert fake_upstream.wait_for_disconnect(2)  # the client gave up on the request


async def test_first_byte_timeout_is_retried(
    fake_upstream: FakeUpstream, fast_backoff: None
) -> None:
    fake_upstream.enqueue(Script.stream(["late"], first_delay=5), Script.stream(["on time"]))
    result = await collect(make_config(fake_upstream, first_byte_timeout=0.3))
    assert result.text == "on time"
    assert [r.reason for r in result.retries] == ["no answer in time"]


async def test_idle_timeout_after_the_first_token(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.stream(["Some", " text"], then="stall"), Script.stream(["x"]))
    result = await collect(make_config(fake_upstream, idle_timeout=0.3))
    assert result.text == "Some text"
    assert result.error.kind == "timeout"
    assert "silent for 0.3 s in the middle" in result.error.message
    assert result.retries == []
    assert fake_upstream.wait_for_disconnect(2)


async def test_silence_after_headers_before_the_first_token_is_retried(
    fake_upstream: FakeUpstream, fast_backoff: None
) -> None:
    # The role-only chunk arrives, then nothing: no text was shown, so trying again is safe.
    fake_upstream.enqueue(Script.stream([], then="stall"), Script.stream(["fine"]))
    result = await collect(make_config(fake_upstream, idle_timeout=0.3))
    assert result.text == "fine"
    assert [r.reason for r in result.retries] == ["provider went silent"]


async def test_keepalive_comments_count_as_life(fake_upstream: FakeUpstream) -> None:
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
    pings = [b":\n\n"] * 5
    fake_upstream.enqueue(Script.raw(chunks=[chunk, *pings, chunk], delays=0.1))
    result = await collect(make_config(fake_upstream, idle_timeout=0.3))
    assert result.text == "xx"
    assert result.last == Finish("stop")


async def test_total_timeout_keeps_the_text(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.stream(["t"] * 50, delay=0.05))
    result = await collect(make_config(fake_upstream, total_timeout=0.5))
    assert 0 < len(result.text) < 50
    assert result.error.kind == "timeout"
    assert "longer than the 0.5 s limit" in result.error.message
    assert result.elapsed < 1.5


# -- cancellation -----------------------------------------------------------------------


def upstream_requests_in_flight() -> int:
    """Requests the shared client's pool still holds open (httpcore internals)."""
    pool = get_client()._transport._pool  # type: ignore[attr-defined]
    return len(pool._requests) + sum(
        1 for c in pool.connections if not (c.is_closed() or c.is_idle())
    )


async def test_cancel_closes_the_upstream_connection(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.stream(["tok"] * 200, delay=0.02))
    first_token = asyncio.Event()

    async def consume() -> None:
        async for event in stream_chat(make_config(fake_upstream), REQUEST):
            if isinstance(event, TextDelta):
                first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), 2)
    assert fake_upstream.disconnects == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert upstream_requests_in_flight() == 0
    assert await fake_upstream.wait_for_disconnect_async(1.0)


async def test_closing_the_stream_early_closes_the_upstream_connection(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.enqueue(Script.stream(["tok"] * 200, delay=0.02))
    async with aclosing(stream_chat(make_config(fake_upstream), REQUEST)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                break
    # Closed by the time aclose() returns, not later by the garbage collector.
    assert upstream_requests_in_flight() == 0
    assert await fake_upstream.wait_for_disconnect_async(1.0)


async def test_cancel_during_retry_sleep(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.error(503, None, {"Retry-After": "10"}))

    async def consume() -> list[Event]:
        config = make_config(fake_upstream, retry_after_cap=30, total_timeout=60)
        return [e async for e in stream_chat(config, REQUEST)]

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- in-band failures -------------------------------------------------------------------


async def test_http_200_with_a_json_error_body(fake_upstream: FakeUpstream) -> None:
    body = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota"}}
    fake_upstream.enqueue(Script.json(body))
    result = await collect(make_config(fake_upstream))
    assert result.error.kind == "budget"
    assert result.error.status == 200
    assert "current quota" in result.error.message

    fake_upstream.enqueue(Script.json({"error": {"message": "Something odd"}}))
    result = await collect(make_config(fake_upstream))
    assert result.error.kind == "protocol"


async def test_error_in_the_middle_of_the_stream(fake_upstream: FakeUpstream) -> None:
    chunks = [
        b'data: {"choices":[{"index":0,"delta":{"content":"The"},"finish_reason":null}]}\n\n',
        b'data: {"error": {"message": "The server had an error", "type": "server_error"}}\n\n',
    ]
    fake_upstream.enqueue(Script.raw(headers={"content-type": "text/event-stream"}, chunks=chunks))
    result = await collect(make_config(fake_upstream))
    assert result.text == "The"
    assert result.error.kind == "stream_error"
    assert "The server had an error" in result.error.message
    assert result.error.status == 200
    assert len(fake_upstream.requests) == 1


async def test_http_200_with_an_html_page(fake_upstream: FakeUpstream) -> None:
    page = b"<html><body><h1>Captive portal</h1><p>Please log in</p></body></html>"
    fake_upstream.enqueue(Script.raw(headers={"content-type": "text/html"}, chunks=[page]))
    result = await collect(make_config(fake_upstream))
    assert result.error.kind == "protocol"
    assert "Captive portal Please log in" in result.error.message


async def test_http_200_with_an_empty_body(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.raw(headers={"content-type": "text/event-stream"}, chunks=[]))
    result = await collect(make_config(fake_upstream))
    assert result.error.kind == "protocol"


async def test_unparseable_stream_chunk(fake_upstream: FakeUpstream) -> None:
    chunks = [b"data: {broken\n\n"]
    fake_upstream.enqueue(Script.raw(headers={"content-type": "text/event-stream"}, chunks=chunks))
    result = await collect(make_config(fake_upstream))
    assert result.error.kind == "protocol"


async def test_error_event_type(fake_upstream: FakeUpstream) -> None:
    chunks = [b'event: error\ndata: {"message": "overloaded", "code": 529}\n\n']
    fake_upstream.enqueue(Script.raw(headers={"content-type": "text/event-stream"}, chunks=chunks))
    result = await collect(make_config(fake_upstream))
    assert "overloaded" in result.error.message


# -- shared client, models, connection check --------------------------------------------


async def test_one_shared_client_per_loop() -> None:
    client = get_client()
    assert get_client() is client
    assert client.trust_env is False
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert pool._max_connections == 1000
    assert pool._max_keepalive_connections == 200
    await aclose_clients()
    assert client.is_closed
    assert get_client() is not client


async def test_connections_are_reused(fake_upstream: FakeUpstream) -> None:
    for _ in range(3):
        await collect(make_config(fake_upstream))
    pool = get_client()._transport._pool  # type: ignore[attr-defined]
    assert len(pool.connections) == 1


async def test_concurrent_streams_are_spread_over_small_pools(fake_upstream: FakeUpstream) -> None:
    # httpcore's pool costs O(connections²) per request: no pool may hold hundreds of streams.
    count = client_module.STREAMS_PER_CLIENT * 2 + 5
    fake_upstream.default = Script.stream(["a", "b", "c"], delay=0.05)
    results = await asyncio.gather(*(collect(make_config(fake_upstream)) for _ in range(count)))
    assert all(result.text == "abc" for result in results)
    shards = client_module._clients[asyncio.get_running_loop()].shards
    assert len(shards) == 3
    assert all(shard.streams == 0 for shard in shards)
    assert all(
        len(shard.client._transport._pool.connections) <= client_module.STREAMS_PER_CLIENT  # type: ignore[attr-defined]
        for shard in shards
    )
    # One at a time, streams go back to the first client and reuse its connections.
    before = len(get_client()._transport._pool.connections)  # type: ignore[attr-defined]
    for _ in range(3):
        await collect(make_config(fake_upstream))
    assert len(get_client()._transport._pool.connections) == before  # type: ignore[attr-defined]
    assert len(fake_upstream.requests) == count + 3


async def test_list_models_and_check_connection(fake_upstream: FakeUpstream) -> None:
    fake_upstream.models = ["zeta", "alpha", "alpha"]
    config = make_config(fake_upstream)
    assert await list_models(config) == ["alpha", "zeta"]
    assert await check_connection(config) == "Connected to 127.0.0.1: 2 models available."
    assert fake_upstream.requests[-1].path == "/v1/models"
    assert fake_upstream.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"


async def test_check_connection_with_a_wrong_key(fake_upstream: FakeUpstream) -> None:
    fake_upstream.api_key = "sk-the-right-key-000000"
    with pytest.raises(ProviderRequestError) as caught:
        await check_connection(make_config(fake_upstream))
    assert caught.value.kind == "auth"
    assert "Check the API key" in str(caught.value)
    assert API_KEY not in str(caught.value)


async def test_list_models_wrong_base_url(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.error(404, "Not Found"), route="models")
    with pytest.raises(ProviderRequestError, match="usually ends in /v1"):
        await list_models(make_config(fake_upstream))


async def test_list_models_unreadable_answer(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.raw(chunks=[b"<html>hello</html>"]), route="models")
    with pytest.raises(ProviderRequestError, match="not with a model list"):
        await list_models(make_config(fake_upstream))


async def test_list_models_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderRequestError) as caught:
        await list_models(ProviderConfig(base_url=f"http://127.0.0.1:{port}/v1"))
    assert caught.value.kind == "connect"
    assert "Could not connect" in str(caught.value)


async def test_list_models_timeout(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script.hang(), route="models")
    with pytest.raises(ProviderRequestError) as caught:
        await list_models(make_config(fake_upstream, first_byte_timeout=0.3))
    assert caught.value.kind == "timeout"


# -- ReadDeadline -----------------------------------------------------------------------


async def test_read_deadline_times_out_a_slow_read() -> None:
    loop = asyncio.get_running_loop()
    reads = ReadDeadline()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await reads.read(asyncio.sleep(5), loop.time() + 0.1)
    assert 0.09 < loop.time() - started < 1
    reads.close()


async def test_read_deadline_moves_with_each_read() -> None:
    # Each read gets its own deadline; the timer set for an earlier one must not fire on a
    # later, longer one.
    loop = asyncio.get_running_loop()
    reads = ReadDeadline()
    for _ in range(5):
        assert await reads.read(asyncio.sleep(0.05, "ok"), loop.time() + 0.08) == "ok"
    assert await reads.read(asyncio.sleep(0.2, "ok"), loop.time() + 0.5) == "ok"
    with pytest.raises(TimeoutError):
        await reads.read(asyncio.sleep(1), loop.time() + 0.05)
    assert await reads.read(asyncio.sleep(0, "again"), loop.time() + 1) == "again"
    reads.close()


async def test_read_deadline_does_not_fire_between_reads() -> None:
    loop = asyncio.get_running_loop()
    reads = ReadDeadline()
    assert await reads.read(asyncio.sleep(0, 1), loop.time() + 0.05) == 1
    await asyncio.sleep(0.1)  # the caller is busy past the old deadline: not a read timeout
    assert await reads.read(asyncio.sleep(0, 2), loop.time() + 0.05) == 2
    reads.close()


async def test_read_deadline_already_expired() -> None:
    loop = asyncio.get_running_loop()
    reads = ReadDeadline()
    with pytest.raises(TimeoutError):
        await reads.read(asyncio.sleep(0), loop.time() - 1)


async def test_read_deadline_lets_outside_cancellation_through() -> None:
    loop = asyncio.get_running_loop()

    async def reader() -> None:
        reads = ReadDeadline()
        await reads.read(asyncio.sleep(5), loop.time() + 2)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
