"""Calling an OpenAI-compatible Chat Completions provider.

stream_chat() is the one way to get an answer: it yields our own events (providers.events)
and never raises for upstream trouble; a failure is its last event, an UpstreamError.

Policy, in one place:
- timeouts: connect; first byte (from sending the request to the first body byte); idle
  (silence between body chunks, keep-alive comments count as life); total (the whole call,
  retries included). First-byte, idle and total are asyncio deadlines around each read, so a
  provider that trickles bytes cannot stretch them.
- retries only before the first delta reached the caller, for connection failures, timeouts
  and 408/409/429/5xx, with capped backoff that honours Retry-After up to a cap. Once text
  has been shown a failure ends the stream (kind "interrupted" or "timeout"); the caller
  keeps the text.
- one shared httpx.AsyncClient per event loop.

Callers should close the generator when they stop early (contextlib.aclosing), so that the
upstream request ends at once; task cancellation does the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import replace

import httpx

from .attempt import MAX_ERROR_BODY, Outcome, redirect_error, run_attempt
from .config import (
    ChatRequest,
    ProviderConfig,
    describe_exception,
    host_of,
    request_body,
    request_headers,
    request_url,
)
from .errors import ProviderRequestError, error_from_http
from .events import Event, Retry, UpstreamError
from .retry import backoff_delay

__all__ = [
    "ChatRequest",
    "ProviderConfig",
    "aclose_clients",
    "check_chat",
    "check_connection",
    "get_client",
    "list_models",
    "stream_chat",
]

logger = logging.getLogger(__name__)

USER_AGENT = "teamchat/0.1"


# -- the shared client --------------------------------------------------------------------

# httpcore's pool looks at every connection it holds (and, for each idle one, at every
# connection again) whenever a request starts or ends: with hundreds of concurrent streams in
# one pool, that becomes most of the CPU a stream costs. Concurrent streams are spread over
# several clients of at most this many streams each; one at a time they all use the first, so
# its connections are reused as before.
STREAMS_PER_CLIENT = 16


class _Shard:
    __slots__ = ("client", "streams")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.streams = 0


class _LoopClients:
    def __init__(self) -> None:
        # One TLS context for all of them: building one loads the CA bundle.
        self.ssl_context = httpx.create_ssl_context(trust_env=False)
        self.shards = [self.new_shard()]

    def new_shard(self) -> _Shard:
        return _Shard(
            httpx.AsyncClient(
                # The default of 100 connections would queue the 101st concurrent stream.
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
                # Requests pass their own timeouts; these only cover a caller that does not.
                timeout=httpx.Timeout(60.0, connect=10.0),
                trust_env=False,
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
                verify=self.ssl_context,
            )
        )


_clients: dict[asyncio.AbstractEventLoop, _LoopClients] = {}


def _loop_clients() -> _LoopClients:
    loop = asyncio.get_running_loop()
    clients = _clients.get(loop)
    if clients is None or clients.shards[0].client.is_closed:
        for old_loop in [other for other in _clients if other.is_closed()]:
            del _clients[old_loop]  # their sockets died with the loop
        clients = _clients[loop] = _LoopClients()
    return clients


def get_client() -> httpx.AsyncClient:
    """The AsyncClient of the running event loop, created on first use.

    httpx clients are bound to the loop their connections were opened on, hence one per loop
    (in production there is one loop; tests make a loop per test).
    """
    return _loop_clients().shards[0].client


@contextmanager
def _client_for_stream() -> Iterator[httpx.AsyncClient]:
    """A client with room for one more stream (see STREAMS_PER_CLIENT), held while it runs."""
    clients = _loop_clients()
    shard = next((s for s in clients.shards if s.streams < STREAMS_PER_CLIENT), None)
    if shard is None:
        shard = clients.new_shard()
        clients.shards.append(shard)
    shard.streams += 1
    try:
        yield shard.client
    finally:
        shard.streams -= 1


async def aclose_clients() -> None:
    """Close the running loop's clients, and forget clients of loops that are closed."""
    loop = asyncio.get_running_loop()
    clients = _clients.pop(loop, None)
    for old_loop in [other for other in _clients if other.is_closed()]:
        del _clients[old_loop]
    if clients is not None:
        for shard in clients.shards:
            await shard.client.aclose()


# Base URLs that rejected stream_options: do not pay a failed request for it every time.
_NO_STREAM_OPTIONS: set[str] = set()


# -- streaming ----------------------------------------------------------------------------


async def stream_chat(config: ProviderConfig, request: ChatRequest) -> AsyncIterator[Event]:
    """Stream one chat completion as events; see providers.events for the sequence."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.total_timeout
    use_stream_options = (
        config.include_usage
        and config.base_url not in _NO_STREAM_OPTIONS
        and "stream_options" not in request.params
    )
    retries = 0
    while True:
        outcome = Outcome()
        body = request_body(request, use_stream_options)
        # aclosing: if our caller stops early, the attempt (and its response) closes now,
        # not whenever the garbage collector finalizes it.
        with _client_for_stream() as client:
            async with aclosing(run_attempt(client, config, body, deadline, outcome)) as events:
                async for event in events:
                    yield event
        error = outcome.error
        if error is None:
            return
        if outcome.stream_options_rejected and use_stream_options:
            # An older server that rejects stream_options: ask again without it, at once.
            _NO_STREAM_OPTIONS.add(config.base_url)
            use_stream_options = False
            continue
        if not outcome.retryable or outcome.started:
            yield error
            return
        wait = error.retry_after
        if wait is not None and wait > config.retry_after_cap:
            yield _with_note(error, f"The provider asks to retry in {wait:.0f} s.")
            return
        if retries >= config.max_retries:
            note = f"Gave up after {retries + 1} attempts." if retries else ""
            yield _with_note(error, note)
            return
        retries += 1
        delay = wait if wait is not None else backoff_delay(retries)
        if loop.time() + delay >= deadline:
            yield _with_note(error, "No time is left for another attempt.")
            return
        logger.info("Retrying %s in %.2f s: %s", host_of(config), delay, outcome.reason)
        yield Retry(attempt=retries, delay=delay, reason=outcome.reason)
        await asyncio.sleep(delay)


def _with_note(error: UpstreamError, note: str) -> UpstreamError:
    if not note:
        return error
    return UpstreamError(
        kind=error.kind,
        message=f"{error.message.rstrip()} {note}",
        status=error.status,
        retry_after=error.retry_after,
    )


# -- model list and connection check ------------------------------------------------------


async def list_models(config: ProviderConfig) -> list[str]:
    """The model ids the provider lists at GET {base_url}/models, sorted.

    Raises ProviderRequestError with a plain-words message on any failure.
    """
    client = get_client()
    timeout = httpx.Timeout(
        connect=config.connect_timeout,
        read=config.first_byte_timeout,
        write=config.connect_timeout,
        pool=config.connect_timeout,
    )
    host = host_of(config)
    try:
        async with asyncio.timeout(config.connect_timeout + config.first_byte_timeout):
            response = await client.get(
                request_url(config, "/models"), headers=request_headers(config), timeout=timeout
            )
    except (TimeoutError, httpx.TimeoutException):
        raise ProviderRequestError(
            f"The provider at {host} did not answer in time.", kind="timeout"
        ) from None
    except httpx.TransportError as exc:
        raise ProviderRequestError(
            f"Could not connect to the provider at {host}: {describe_exception(exc, config)}",
            kind="connect",
        ) from None
    except httpx.InvalidURL:
        raise ProviderRequestError(
            "The base URL is not a valid http(s) address.", kind="bad_request"
        ) from None

    redirect = redirect_error(response, config)
    if redirect is not None:
        raise ProviderRequestError(redirect.message, kind=redirect.kind, status=redirect.status)
    if response.status_code >= 400:
        error = error_from_http(
            response.status_code,
            response.content[:MAX_ERROR_BODY],
            response.headers.get("content-type", ""),
            api_key=config.api_key,
        )
        hint = {
            "auth": " Check the API key.",
            "not_found": " Check the base URL; it usually ends in /v1.",
        }.get(error.kind, "")
        raise ProviderRequestError(error.message + hint, kind=error.kind, status=error.status)

    try:
        payload = response.json()
    except ValueError:
        raise ProviderRequestError(
            f"The provider at {host} answered, but not with a model list. "
            "Check the base URL; it usually ends in /v1.",
            kind="protocol",
            status=response.status_code,
        ) from None
    items = payload.get("data", payload.get("models")) if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise ProviderRequestError(
            f"The provider at {host} answered with a model list this app cannot read.",
            kind="protocol",
            status=response.status_code,
        )
    ids = set()
    for item in items:
        if isinstance(item, str):
            ids.add(item)
        elif isinstance(item, dict):
            model_id = item.get("id") or item.get("name") or item.get("model")
            if isinstance(model_id, str) and model_id:
                ids.add(model_id)
    return sorted(ids)


async def check_connection(config: ProviderConfig) -> str:
    """A plain-words success message, or ProviderRequestError saying what is wrong."""
    models = await list_models(config)
    host = host_of(config)
    if not models:
        return f"Connected to {host}, but it lists no models."
    count = len(models)
    return f"Connected to {host}: {count} model{'s' if count != 1 else ''} available."


async def check_chat(config: ProviderConfig, model: str) -> str:
    """Ask ``model`` for a one-token reply, for providers without a /models list.

    A plain-words success message, or ProviderRequestError with the provider's own words.
    """
    request = ChatRequest(
        model=model, messages=[{"role": "user", "content": "Hi"}], params={"max_tokens": 1}
    )
    # One attempt: a connection check should report what happened, not hide it behind retries.
    async with aclosing(stream_chat(replace(config, max_retries=0), request)) as events:
        async for event in events:
            if isinstance(event, UpstreamError):
                raise ProviderRequestError(event.message, kind=event.kind, status=event.status)
    return f"Connected to {host_of(config)}: the model {model} answered."
