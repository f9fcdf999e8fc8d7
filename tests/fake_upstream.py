"""A fake OpenAI-compatible upstream: a real HTTP/1.1 server on a loopback port.

It runs its own event loop in a daemon thread, so sync tests, async tests (on any loop) and
benchmarks can all use it, and it sees what a real provider would see: the bytes the client
sends and the moment the client closes its connection.

    fake = FakeUpstream(); fake.start()           # or: with FakeUpstream() as fake:
    fake.enqueue(Script.stream(["Hel", "lo"]))    # FIFO; fake.default once the queue is empty
    config = ProviderConfig(base_url=fake.base_url)
    ...
    fake.requests[-1].json["model"]; fake.wait_for_disconnect(2.0)
    fake.responder = lambda body: Script.stream([...])  # answers from the request, queue first

Command line (for benchmarks), serving the default script until killed:

    python -m tests.fake_upstream --port 0 --tokens 200 --delay 0.005
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

__all__ = ["FakeUpstream", "RecordedRequest", "Script", "fake_upstream_fixture"]

_DEFAULT = object()  # "use the default usage" marker for Script.stream
THEN_VALUES = ("done", "close", "stall", "eof")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    json: Any  # the parsed body, or None when it was empty or not JSON
    body: bytes = b""


@dataclass(frozen=True)
class Script:
    """What the fake answers to one request. Build with the class methods."""

    kind: str  # "stream" | "error" | "raw" | "json" | "hang"
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    # stream
    texts: tuple[str, ...] = ()  # the content tokens
    reasoning: tuple[str, ...] = ()
    reasoning_field: str = "reasoning_content"
    tool_calls: tuple[Mapping[str, str], ...] = ()
    delay: float = 0.0
    first_delay: float = 0.0
    usage: Mapping[str, int] | None = None
    usage_every_chunk: bool = False
    finish_reason: str | None = "stop"
    then: str = "done"
    crlf: bool = False
    model: str = "fake-model"
    # raw / error / json
    chunks: tuple[bytes, ...] = ()
    delays: tuple[float, ...] | float = 0.0
    body: bytes = b""

    @classmethod
    def stream(
        cls,
        tokens: Sequence[str],
        delay: float = 0.0,
        first_delay: float = 0.0,
        usage: Mapping[str, int] | object | None = _DEFAULT,
        finish_reason: str | None = "stop",
        reasoning: Sequence[str] = (),
        then: str = "done",
        crlf: bool = False,
        *,
        reasoning_field: str = "reasoning_content",
        tool_calls: Sequence[Mapping[str, str]] = (),
        usage_every_chunk: bool = False,
        model: str = "fake-model",
        headers: Mapping[str, str] | None = None,
    ) -> Script:
        """OpenAI-format chunks: a role-only first delta, reasoning deltas, one delta per token,
        tool calls (dicts with id, name, arguments; arguments sent in two fragments), then per
        `then`: "done" = finish chunk, usage chunk, [DONE]; "eof" = the same without [DONE];
        "close" = drop the connection after the tokens; "stall" = go silent after the tokens.
        """
        if then not in THEN_VALUES:
            raise ValueError(f"then must be one of {THEN_VALUES}")
        if usage is _DEFAULT:
            completion = len(tokens) + len(reasoning)
            usage = {"prompt_tokens": 10, "completion_tokens": completion}
            usage["total_tokens"] = 10 + completion
        return cls(
            kind="stream",
            texts=tuple(tokens),
            delay=delay,
            first_delay=first_delay,
            usage=usage,  # type: ignore[arg-type]
            finish_reason=finish_reason,
            reasoning=tuple(reasoning),
            reasoning_field=reasoning_field,
            tool_calls=tuple(tool_calls),
            usage_every_chunk=usage_every_chunk,
            then=then,
            crlf=crlf,
            model=model,
            headers=dict(headers or {}),
        )

    @classmethod
    def tokens(cls, n: int = 200, delay: float = 0.005, **options: Any) -> Script:
        """For benchmarks: n tokens "tok0 ", "tok1 ", ... delay seconds apart."""
        return cls.stream([f"tok{i} " for i in range(n)], delay=delay, **options)

    @classmethod
    def error(
        cls,
        status: int,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Script:
        """An error answer: a dict is sent as JSON, a str as text (HTML if it looks like
        it), bytes as they are, None as an empty body."""
        out_headers = {k.lower(): v for k, v in (headers or {}).items()}
        if body is None:
            raw = b""
        elif isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode()
            looks_html = body.lstrip()[:1] == "<"
            out_headers.setdefault(
                "content-type", "text/html; charset=utf-8" if looks_html else "text/plain"
            )
        else:
            raw = json.dumps(body).encode()
            out_headers.setdefault("content-type", "application/json")
        return cls(kind="error", status=status, headers=out_headers, body=raw)

    @classmethod
    def raw(
        cls,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        chunks: Sequence[bytes] = (),
        delays: Sequence[float] | float = 0.0,
        then: str = "eof",
    ) -> Script:
        """Exact body bytes, one HTTP chunk per item (so the client sees the same splits),
        each after its delay (a float: between chunks). then: "eof" ends the body cleanly,
        "close" drops the connection, "stall" goes silent."""
        if then not in ("eof", "close", "stall"):
            raise ValueError("then must be 'eof', 'close' or 'stall'")
        return cls(
            kind="raw",
            status=status,
            headers={k.lower(): v for k, v in (headers or {}).items()},
            chunks=tuple(chunks),
            delays=delays if isinstance(delays, (int, float)) else tuple(delays),
            then=then,
        )

    @classmethod
    def json(
        cls, body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Script:
        """A non-streaming JSON answer, whatever the request asked for."""
        out_headers = {k.lower(): v for k, v in (headers or {}).items()}
        out_headers.setdefault("content-type", "application/json")
        return cls(kind="json", status=status, headers=out_headers, body=json.dumps(body).encode())

    @classmethod
    def hang(cls) -> Script:
        """Read the request and never answer."""
        return cls(kind="hang")


class _ClientGone(Exception):
    pass


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs scripts one at a time (no pipelining)."""

    def __init__(self, server: FakeUpstream) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: deque[tuple[str, str, dict[str, str], bytes]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.closed: asyncio.Future[None] | None = None
        self.in_response = False
        self.generation = 0  # FakeUpstream.reset() count when the current answer began
        self.can_write: asyncio.Event = asyncio.Event()
        self.can_write.set()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.closed = asyncio.get_running_loop().create_future()
        self.server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, _version = lines[0].split(" ", 2)
            except ValueError:
                self._bad_request()
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.pending.append((method, target, headers, body))
            if self.worker is None or self.worker.done():
                self.worker = asyncio.ensure_future(self._work())
                self.server._workers.add(self.worker)
                self.worker.add_done_callback(self.server._workers.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        self.can_write.set()  # wake a writer waiting for the buffer to drain
        if self.in_response:
            self.in_response = False
            self.server._record_disconnect(self.generation)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    # -- writing -----------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self.closed is None or self.closed.done()

    def write(self, data: bytes) -> None:
        if self.is_closed or self.transport is None or self.transport.is_closing():
            raise _ClientGone
        self.transport.write(data)

    async def drain(self) -> None:
        if not self.can_write.is_set():
            await self.can_write.wait()
        if self.is_closed:
            raise _ClientGone

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)
        if self.is_closed:
            raise _ClientGone

    async def wait_closed(self) -> None:
        assert self.closed is not None
        await self.closed
        raise _ClientGone

    def head(self, status: int, headers: Mapping[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def close(self) -> None:
        self.in_response = False  # we hang up: not a client disconnect
        if self.transport is not None:
            self.transport.close()

    def _bad_request(self) -> None:
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()

    # -- serving -----------------------------------------------------------------------

    async def _work(self) -> None:
        while self.pending and not self.is_closed:
            method, target, headers, body = self.pending.popleft()
            self.in_response = True
            self.generation = self.server._generation_now()
            try:
                await self.server._respond(self, method, target, headers, body)
            except _ClientGone:
                pass
            except (ConnectionError, RuntimeError):
                pass
            finally:
                self.in_response = False


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class FakeUpstream:
    """See the module docstring. All public methods are safe to call from any thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        default: Script | None = None,
        models: Sequence[str] = ("fake-model", "fake-model-large"),
        api_key: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queues: dict[str, deque[Script]] = {"chat": deque(), "models": deque()}
        self._default = default or Script.stream(["Hello", ", ", "world", "!"])
        self._models = list(models)
        self._api_key = api_key
        self._requests: list[RecordedRequest] = []
        self._responder: Callable[[Any], Script | None] | None = None
        self._disconnects = 0
        self._connections: set[_Connection] = set()
        self._workers: set[asyncio.Future[None]] = set()
        self._generation = 0  # bumped by reset(): late disconnects of old answers don't count
        self._initial = (self._default, list(models), api_key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._counter = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(
                        lambda: _Connection(self), self.host, self.port, backlog=2048
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # report bind errors to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for connection in list(self._connections):
                if connection.transport is not None:
                    connection.transport.abort()
            workers = list(self._workers)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            loop.stop()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(5)
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- configuration -----------------------------------------------------------------

    def enqueue(self, *scripts: Script, route: str = "chat") -> None:
        """Answer the next requests on route ("chat" or "models") with these scripts."""
        with self._lock:
            self._queues[route].extend(scripts)

    @property
    def default(self) -> Script:
        with self._lock:
            return self._default

    @default.setter
    def default(self, script: Script) -> None:
        with self._lock:
            self._default = script

    @property
    def responder(self) -> Callable[[Any], Script | None] | None:
        """Called with each chat request's parsed body when the queue is empty; the Script it
        returns is the answer (None: the default). It runs on the server's thread."""
        with self._lock:
            return self._responder

    @responder.setter
    def responder(self, responder: Callable[[Any], Script | None] | None) -> None:
        with self._lock:
            self._responder = responder

    @property
    def models(self) -> list[str]:
        with self._lock:
            return list(self._models)

    @models.setter
    def models(self, models: Sequence[str]) -> None:
        with self._lock:
            self._models = list(models)

    @property
    def api_key(self) -> str | None:
        """When set, requests without "Authorization: Bearer <api_key>" get a 401."""
        with self._lock:
            return self._api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        with self._lock:
            self._api_key = value

    def reset(self) -> None:
        """Back to the state after construction: empty queues and records, initial default,
        models and api_key. Disconnects of answers begun before the reset are not counted."""
        with self._lock:
            for queue in self._queues.values():
                queue.clear()
            self._requests.clear()
            self._disconnects = 0
            self._generation += 1
            self._default, models, self._api_key = self._initial
            self._models = list(models)
            self._responder = None

    # -- observation -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def disconnects(self) -> int:
        """How many times a client closed its connection while an answer was in progress."""
        with self._lock:
            return self._disconnects

    def wait_for_disconnect(self, timeout: float = 2.0, count: int = 1) -> bool:
        """Block until `count` mid-answer disconnects have been seen; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._disconnects >= count, timeout)

    async def wait_for_disconnect_async(self, timeout: float = 2.0, count: int = 1) -> bool:
        return await asyncio.to_thread(self.wait_for_disconnect, timeout, count)

    def wait_for_requests(self, count: int, timeout: float = 2.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= count, timeout)

    def _generation_now(self) -> int:
        with self._lock:
            return self._generation

    def _record_disconnect(self, generation: int) -> None:
        with self._changed:
            if generation == self._generation:
                self._disconnects += 1
                self._changed.notify_all()

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _next_script(self, route: str, body: Any = None) -> Script | None:
        with self._lock:
            queue = self._queues[route]
            if queue:
                return queue.popleft()
            if route != "chat":
                return None
            responder, default = self._responder, self._default
        return (responder(body) if responder is not None else None) or default

    # -- answering (server thread) -----------------------------------------------------

    async def _respond(
        self, conn: _Connection, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> None:
        path = target.split("?", 1)[0]
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        self._record(RecordedRequest(method, path, headers, parsed, body))

        api_key = self.api_key
        if api_key is not None and headers.get("authorization") != f"Bearer {api_key}":
            sent = headers.get("authorization", "").removeprefix("Bearer ")
            # Like some real providers, echo what was sent: clients must scrub it.
            await self._send(
                conn,
                Script.error(
                    401,
                    {
                        "error": {
                            "message": f"Incorrect API key provided: {sent}",
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                        }
                    },
                ),
                stream=False,
            )
            return
        if path.endswith("/chat/completions") and method == "POST":
            script = self._next_script("chat", parsed)
            stream = isinstance(parsed, dict) and parsed.get("stream") is True
            assert script is not None
            await self._send(conn, script, stream=stream)
        elif path.endswith("/models") and method == "GET":
            script = self._next_script("models")
            if script is None:
                data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.models]
                script = Script.json({"object": "list", "data": data})
            await self._send(conn, script, stream=False)
        else:
            await self._send(
                conn,
                Script.error(404, {"error": {"message": f"No route for {method} {path}"}}),
                stream=False,
            )

    async def _send(self, conn: _Connection, script: Script, *, stream: bool) -> None:
        if script.kind == "hang":
            await conn.wait_closed()
        elif script.kind in ("error", "json"):
            headers = {"content-length": str(len(script.body)), **script.headers}
            conn.write(conn.head(script.status, headers) + script.body)
        elif script.kind == "raw":
            await self._send_raw(conn, script)
        elif stream:
            await self._send_stream(conn, script)
        else:
            await self._send_completion(conn, script)

    async def _send_raw(self, conn: _Connection, script: Script) -> None:
        headers = dict(script.headers)
        chunked = "content-length" not in headers
        if chunked:
            headers.pop("transfer-encoding", None)
            headers["transfer-encoding"] = "chunked"
        conn.write(conn.head(script.status, headers))
        delays = script.delays
        for position, data in enumerate(script.chunks):
            if isinstance(delays, tuple):
                pause = delays[position] if position < len(delays) else 0.0
            else:
                pause = delays if position else 0.0
            await conn.sleep(pause)
            if data:  # an empty HTTP chunk would end the body
                conn.write(_chunk(data) if chunked else data)
                await conn.drain()
        await self._then(conn, script.then, chunked)

    async def _then(self, conn: _Connection, then: str, chunked: bool) -> None:
        if then == "close":
            conn.close()
        elif then == "stall":
            await conn.wait_closed()
        elif chunked:
            conn.write(b"0\r\n\r\n")

    async def _send_stream(self, conn: _Connection, script: Script) -> None:
        end = "\r\n\r\n" if script.crlf else "\n\n"
        with self._lock:
            self._counter += 1
            number = self._counter
        prefix = (
            f'data: {{"id":"chatcmpl-fake{number}","object":"chat.completion.chunk",'
            f'"created":{int(time.time())},"model":{json.dumps(script.model)},'
        )
        choice = '"choices":[{"index":0,"delta":'
        tail = ',"finish_reason":null}]'
        usage = script.usage

        def event(delta: dict[str, Any], sent: int) -> bytes:
            text = prefix + choice + json.dumps(delta) + tail
            if script.usage_every_chunk and usage is not None:
                running = {"prompt_tokens": usage.get("prompt_tokens", 0)}
                running["completion_tokens"] = sent
                running["total_tokens"] = running["prompt_tokens"] + sent
                text += ',"usage":' + json.dumps(running)
            return _chunk((text + "}" + end).encode())

        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
            **script.headers,
        }
        conn.write(conn.head(script.status, headers))
        # Tokens are due at fixed times from the start, so that scheduling delays under load
        # do not add up over a long stream.
        loop = asyncio.get_running_loop()
        due = loop.time() + script.first_delay
        await conn.sleep(script.first_delay)
        pieces: list[dict[str, Any]] = [{script.reasoning_field: r} for r in script.reasoning]
        pieces += [{"content": token} for token in script.texts]
        first = event({"role": "assistant", "content": ""}, 0)
        for sent, delta in enumerate(pieces, 1):
            data = event(delta, sent)
            if first:
                data, first = first + data, b""
            elif script.delay:
                due += script.delay
                await conn.sleep(due - loop.time())
            conn.write(data)
            await conn.drain()
        if first:
            conn.write(first)
        for index, call in enumerate(script.tool_calls):
            arguments = call.get("arguments", "")
            half = len(arguments) // 2
            head = {
                "index": index,
                "id": call.get("id", f"call_{index}"),
                "type": "function",
                "function": {"name": call.get("name", ""), "arguments": arguments[:half]},
            }
            conn.write(event({"tool_calls": [head]}, len(pieces)))
            rest = {"index": index, "function": {"arguments": arguments[half:]}}
            conn.write(event({"tool_calls": [rest]}, len(pieces)))
        if script.then in ("close", "stall"):
            await self._then(conn, script.then, True)
            return
        out = []
        if script.finish_reason is not None:
            out.append(
                prefix
                + choice
                + '{},"finish_reason":'
                + json.dumps(script.finish_reason)
                + "}]}"
                + end
            )
        if usage is not None:
            out.append(prefix + '"choices":[],"usage":' + json.dumps(usage) + "}" + end)
        if script.then == "done":
            out.append("data: [DONE]" + end)
        data = "".join(out).encode()
        conn.write((_chunk(data) if data else b"") + b"0\r\n\r\n")

    async def _send_completion(self, conn: _Connection, script: Script) -> None:
        """A non-streaming answer built from a stream script."""
        await conn.sleep(script.first_delay)
        if script.then == "stall":
            await conn.wait_closed()
        if script.then == "close":
            conn.close()
            return
        message: dict[str, Any] = {"role": "assistant", "content": "".join(script.texts)}
        if script.reasoning:
            message[script.reasoning_field] = "".join(script.reasoning)
        if script.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.get("id", f"call_{index}"),
                    "type": "function",
                    "function": {
                        "name": call.get("name", ""),
                        "arguments": call.get("arguments", ""),
                    },
                }
                for index, call in enumerate(script.tool_calls)
            ]
        completion: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": script.model,
            "choices": [{"index": 0, "message": message, "finish_reason": script.finish_reason}],
        }
        if script.usage is not None:
            completion["usage"] = dict(script.usage)
        body = json.dumps(completion).encode()
        headers = {
            "content-type": "application/json",
            "content-length": str(len(body)),
            **script.headers,
        }
        conn.write(conn.head(script.status, headers) + body)


def fake_upstream_fixture() -> Iterator[FakeUpstream]:
    """Body for a pytest fixture: `fake_upstream = pytest.fixture(fake_upstream_fixture)`."""
    with FakeUpstream() as fake:
        yield fake


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per answer")
    parser.add_argument("--delay", type=float, default=0.005, help="seconds between tokens")
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the first")
    args = parser.parse_args(argv)
    script = Script.stream(
        [f"tok{i} " for i in range(args.tokens)], delay=args.delay, first_delay=args.first_delay
    )
    fake = FakeUpstream(args.host, args.port, default=script)
    fake.start()
    print(fake.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
