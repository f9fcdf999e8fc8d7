"""One HTTP request for a streamed chat completion, read into events.

run_attempt() yields the deltas as they arrive and records how the attempt ended in an
Outcome: the retry loop in providers.client decides what happens next. Timeouts: the first
byte (from sending the request), idle (between body chunks; keep-alive comments count) and the
total deadline, all enforced with asyncio deadlines rather than httpx's per-read timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import httpx

from .chunks import ChunkInterpreter
from .config import ProviderConfig, describe_exception, host_of, request_headers, request_url
from .deadline import ReadDeadline
from .errors import error_from_http, extract_error_text, scrub, truncate
from .events import Event, UpstreamError
from .retry import is_retryable_status, parse_retry_after
from .sse import SSEDecoder

__all__ = ["MAX_ERROR_BODY", "Outcome", "redirect_error", "run_attempt"]

logger = logging.getLogger("providers.client")

MAX_ERROR_BODY = 64 * 1024
MAX_JSON_BODY = 16 * 1024 * 1024
# After [DONE] (and after Finish was yielded), how long to wait for the end of the body so
# the connection goes back to the pool; a well-behaved server ends it at once.
DRAIN_TIMEOUT = 0.2


@dataclass
class Outcome:
    """How one attempt ended; error is None on success."""

    error: UpstreamError | None = None
    retryable: bool = False
    started: bool = False  # a delta reached the caller: no more retries
    reason: str = ""  # for the Retry event
    stream_options_rejected: bool = False


async def run_attempt(
    client: httpx.AsyncClient,
    config: ProviderConfig,
    body: dict[str, object],
    deadline: float,
    outcome: Outcome,
) -> AsyncIterator[Event]:
    """One HTTP request. Yields deltas; records failure in outcome instead of yielding it."""
    loop = asyncio.get_running_loop()
    timeout = httpx.Timeout(
        connect=config.connect_timeout,
        read=None,  # enforced below with asyncio deadlines
        write=config.connect_timeout,
        pool=config.connect_timeout,
    )
    try:
        http_request = client.build_request(
            "POST",
            request_url(config, "/chat/completions"),
            content=json.dumps(body, ensure_ascii=False).encode(),
            headers={**request_headers(config), "Content-Type": "application/json"},
            timeout=timeout,
        )
    except httpx.InvalidURL:
        outcome.error = UpstreamError("connect", "The base URL is not a valid http(s) address.")
        return
    first_byte_at = min(deadline, loop.time() + config.first_byte_timeout)
    try:
        async with asyncio.timeout_at(first_byte_at):
            response = await client.send(http_request, stream=True)
    except TimeoutError:
        _timed_out(config, outcome, deadline, before_first_byte=True)
        return
    except httpx.TimeoutException:  # connect, write or pool timeout
        outcome.error = UpstreamError(
            "timeout",
            f"Could not connect to the provider at {host_of(config)} within "
            f"{config.connect_timeout:g} s.",
        )
        outcome.retryable, outcome.reason = True, "connection timed out"
        return
    except httpx.UnsupportedProtocol:
        outcome.error = UpstreamError(
            "connect", "The base URL must start with http:// or https://."
        )
        return
    except httpx.ConnectError as exc:  # refused, DNS, TLS
        outcome.error = UpstreamError(
            "connect",
            f"Could not connect to the provider at {host_of(config)}: "
            f"{describe_exception(exc, config)}",
        )
        outcome.retryable, outcome.reason = True, "connection failed"
        return
    except httpx.TransportError as exc:  # e.g. a reused connection the server had closed
        outcome.error = UpstreamError(
            "connect",
            f"The provider at {host_of(config)} closed the connection before answering "
            f"({describe_exception(exc, config)}).",
        )
        outcome.retryable, outcome.reason = True, "connection closed"
        return
    try:
        if not 200 <= response.status_code < 300:
            await _read_http_error(config, response, body, deadline, outcome)
            return
        answer = _read_answer(config, response, deadline, first_byte_at, outcome)
        async with aclosing(answer) as events:
            async for event in events:
                yield event
    finally:
        # Also runs on cancellation and on aclose(): the upstream request ends here.
        await response.aclose()


def _timed_out(
    config: ProviderConfig,
    outcome: Outcome,
    deadline: float,
    *,
    before_first_byte: bool,
    started: bool = False,
) -> None:
    loop = asyncio.get_running_loop()
    if loop.time() >= deadline - 0.001:
        outcome.error = UpstreamError(
            "timeout", f"The answer took longer than the {config.total_timeout:g} s limit."
        )
        return  # never retried: the deadline covers retries too
    if before_first_byte:
        message = f"The provider did not answer within {config.first_byte_timeout:g} s."
        outcome.reason = "no answer in time"
    elif started:
        message = (
            f"The provider went silent for {config.idle_timeout:g} s in the middle of the answer."
        )
    else:
        message = f"The provider went silent for {config.idle_timeout:g} s before answering."
        outcome.reason = "provider went silent"
    outcome.error = UpstreamError("timeout", message)
    outcome.retryable = not started


async def _read_limited(
    response: httpx.Response, limit: int, deadline: float, idle: float
) -> bytes:
    """Up to limit bytes of the body, each read bounded by idle and by the deadline."""
    loop = asyncio.get_running_loop()
    parts: list[bytes] = []
    size = 0
    iterator = response.aiter_bytes().__aiter__()
    while size < limit:
        async with asyncio.timeout_at(min(deadline, loop.time() + idle)):
            try:
                part = await anext(iterator)
            except StopAsyncIteration:
                break
        parts.append(part)
        size += len(part)
    return b"".join(parts)[:limit]


def redirect_error(response: httpx.Response, config: ProviderConfig) -> UpstreamError | None:
    """Redirects are not followed (a POST must not silently turn into a GET elsewhere); they
    nearly always mean a base URL that needs https:// or a different path."""
    if not 300 <= response.status_code < 400:
        return None
    location = scrub(response.headers.get("location", "another address"), config.api_key)
    return UpstreamError(
        "protocol",
        f"The provider redirects to {truncate(location, 200)} (HTTP {response.status_code}). "
        "Check the base URL.",
        status=response.status_code,
    )


async def _read_http_error(
    config: ProviderConfig,
    response: httpx.Response,
    body: dict[str, object],
    deadline: float,
    outcome: Outcome,
) -> None:
    status = response.status_code
    redirect = redirect_error(response, config)
    if redirect is not None:
        outcome.error = redirect
        return
    try:
        raw = await _read_limited(response, MAX_ERROR_BODY, deadline, config.idle_timeout)
    except (TimeoutError, httpx.TransportError):
        raw = b""  # the status alone is enough to report
    retry_after = parse_retry_after(response.headers)
    error = error_from_http(
        status,
        raw,
        response.headers.get("content-type", ""),
        api_key=config.api_key,
        retry_after=retry_after,
    )
    outcome.error = error
    if status in (400, 422) and "stream_options" in body:
        lowered = raw.decode("utf-8", errors="replace").lower()
        outcome.stream_options_rejected = "stream_options" in lowered or "include_usage" in lowered
    outcome.retryable = is_retryable_status(status) and error.kind != "budget"
    outcome.reason = f"HTTP {status}"
    logger.info("Provider %s answered HTTP %s (%s)", host_of(config), status, error.kind)


async def _read_answer(
    config: ProviderConfig,
    response: httpx.Response,
    deadline: float,
    first_byte_at: float,
    outcome: Outcome,
) -> AsyncIterator[Event]:
    """Read a 2xx body, as an event stream or, if the provider ignored stream, as JSON."""
    loop = asyncio.get_running_loop()
    interpreter = ChunkInterpreter(status=response.status_code, api_key=config.api_key)
    decoder = SSEDecoder()
    iterator = response.aiter_bytes().__aiter__()
    mode: str | None = None  # "sse" or "json", decided by the first non-blank byte
    head = b""  # bytes read before the mode is known
    json_parts: list[bytes] = []
    json_size = 0
    got_bytes = False
    sample = b""  # the start of the body, to quote if it turns out not to be an event stream
    sse_events = 0
    reads = ReadDeadline()  # one cheap timer for first-byte, idle and total deadlines
    try:
        while True:
            limit = loop.time() + config.idle_timeout if got_bytes else first_byte_at
            try:
                chunk = await reads.read(anext(iterator), min(limit, deadline))
            except StopAsyncIteration:
                break
            except TimeoutError:
                if interpreter.finish_reason is not None and mode == "sse":
                    break  # the answer is complete; only the end of the stream is missing
                _timed_out(
                    config,
                    outcome,
                    deadline,
                    before_first_byte=not got_bytes,
                    started=interpreter.has_output,
                )
                return
            except httpx.TransportError as exc:
                if interpreter.finish_reason is not None and mode == "sse":
                    break
                _broken(config, outcome, exc, interpreter.has_output)
                return
            got_bytes = True

            if mode is None:
                head += chunk
                start = head.lstrip(b" \t\r\n\xef\xbb\xbf")
                if not start:
                    continue
                # No event stream starts with "{" or "[": this is a whole JSON body.
                mode = "json" if start[:1] in (b"{", b"[") else "sse"
                chunk, head = head, b""
            if mode == "json":
                json_parts.append(chunk)
                json_size += len(chunk)
                if json_size > MAX_JSON_BODY:
                    outcome.error = UpstreamError(
                        "protocol",
                        "The provider's answer is too large.",
                        status=response.status_code,
                    )
                    return
                continue

            if len(sample) < 2048:
                sample += chunk[:2048]
            events = []
            for sse_event in decoder.feed(chunk):
                sse_events += 1
                events.extend(_interpret(interpreter, sse_event.event, sse_event.data))
            for event in events:
                if isinstance(event, UpstreamError):
                    outcome.error = event
                    return
                outcome.started = True
                yield event
            if interpreter.done:
                break

        if mode == "json":
            events = _interpret_json_body(interpreter, b"".join(json_parts), config.api_key)
        elif mode is None:
            events = [
                UpstreamError(
                    "protocol",
                    "The provider ended the answer without sending anything.",
                    status=response.status_code,
                )
            ]
        else:
            events = []
            if not interpreter.done:
                for sse_event in decoder.close():
                    sse_events += 1
                    events.extend(_interpret(interpreter, sse_event.event, sse_event.data))
            if not sse_events:
                # Not one event: an HTML page from a proxy, plain text, comments only...
                snippet = extract_error_text(sample, response.headers.get("content-type", ""))
                events = [
                    UpstreamError(
                        "protocol",
                        "The provider sent an answer that could not be understood: "
                        + (scrub(snippet, config.api_key) or "no events"),
                        status=response.status_code,
                    )
                ]
        for event in events:
            if isinstance(event, UpstreamError):
                outcome.error = event
                return
            outcome.started = True
            yield event

        # A clean end of the body (or [DONE]) is a success even without [DONE] or finish_reason:
        # some llama.cpp builds omit [DONE]. Breaks of the transport were handled above.
        for event in interpreter.finish():
            yield event
        if interpreter.done:
            await _drain(iterator)

    finally:
        reads.close()


def _interpret(interpreter: ChunkInterpreter, event_name: str | None, data: str) -> list[Event]:
    if event_name == "error":
        # "event: error" with a JSON or text payload (some gateways): report it in-band.
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = {"message": data}
        if not (isinstance(parsed, dict) and "error" in parsed):
            parsed = {"error": parsed}
        return interpreter.feed_chunk(parsed)
    return interpreter.feed_payload(data)


def _interpret_json_body(interpreter: ChunkInterpreter, raw: bytes, api_key: str) -> list[Event]:
    try:
        body = json.loads(raw.decode("utf-8", errors="replace").lstrip("\ufeff"))
    except ValueError:
        snippet = scrub(extract_error_text(raw), api_key) or "an unreadable body"
        return [
            UpstreamError(
                "protocol",
                f"The provider sent an answer that could not be understood: {snippet}",
                status=interpreter.status,
            )
        ]
    return interpreter.feed_body(body)


def _broken(
    config: ProviderConfig, outcome: Outcome, exc: httpx.TransportError, started: bool
) -> None:
    detail = describe_exception(exc, config)
    if started:
        message = (
            f"The connection to the provider broke off in the middle of the answer ({detail})."
        )
    else:
        message = f"The connection to the provider broke off before the answer began ({detail})."
        outcome.retryable, outcome.reason = True, "connection broke off"
    outcome.error = UpstreamError("interrupted", message)


async def _drain(iterator: AsyncIterator[bytes]) -> None:
    """Read what follows [DONE] (normally just the end of the body) so the connection is
    returned to the pool instead of being closed."""
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            size = 0
            async for part in iterator:
                size += len(part)
                if size > MAX_ERROR_BODY:
                    return
    except (TimeoutError, httpx.TransportError):
        pass
