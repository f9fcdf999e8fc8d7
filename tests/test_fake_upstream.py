"""The fake upstream itself: what it sends on the wire, what it records, and its CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from providers.sse import SSEDecoder
from tests.fake_upstream import FakeUpstream, Script, fake_upstream_fixture

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    # A private instance: these tests stop servers and count disconnects from a clean start.
    yield from fake_upstream_fixture()


def post(
    fake: FakeUpstream,
    stream: bool = True,
    timeout: float = 5,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    body["stream"] = stream
    url = f"{fake.base_url}/chat/completions"
    return httpx.post(url, json=body, timeout=timeout, headers=headers)


def payloads(body: bytes) -> list[str]:
    decoder = SSEDecoder()
    return [event.data for event in decoder.feed(body) + decoder.close()]


def test_base_url_and_lifecycle() -> None:
    with FakeUpstream() as fake:
        assert fake.base_url.startswith("http://127.0.0.1:")
        assert fake.base_url.endswith("/v1")
        assert fake.port > 0
        assert post(fake).status_code == 200
    with pytest.raises(httpx.ConnectError):
        post(fake)


def test_stream_is_openai_shaped(fake: FakeUpstream) -> None:
    fake.enqueue(Script.stream(["Hel", "lo"], reasoning=["hm"]))
    response = post(fake)
    assert response.headers["content-type"].startswith("text/event-stream")
    data = payloads(response.content)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert all({"id", "object", "created", "model"} <= chunk.keys() for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks[1:4]]
    assert deltas == [{"reasoning_content": "hm"}, {"content": "Hel"}, {"content": "lo"}]
    assert chunks[4]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert chunks[5]["choices"] == []
    assert chunks[5]["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}


def test_stream_options(fake: FakeUpstream) -> None:
    fake.enqueue(
        Script.stream(["a"], usage=None, finish_reason="length", then="eof", crlf=True),
    )
    body = post(fake).content
    assert b"\r\n\r\n" in body and b"\n\n" not in body.replace(b"\r\n\r\n", b"")
    data = payloads(body)
    assert "[DONE]" not in data
    assert json.loads(data[-1])["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in json.loads(item) for item in data)


def test_tokens_convenience(fake: FakeUpstream) -> None:
    fake.enqueue(Script.tokens(n=5, delay=0))
    data = payloads(post(fake).content)
    texts = [json.loads(item)["choices"][0]["delta"].get("content") for item in data[1:6]]
    assert texts == ["tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4 "]


def test_token_delays(fake: FakeUpstream) -> None:
    fake.enqueue(Script.stream(["a", "b", "c", "d"], delay=0.05, first_delay=0.1))
    started = time.perf_counter()
    post(fake)
    assert time.perf_counter() - started >= 0.25


def test_non_streaming_request_gets_a_json_completion(fake: FakeUpstream) -> None:
    fake.enqueue(Script.stream(["Hel", "lo"], reasoning=["hm"], finish_reason="length"))
    response = post(fake, stream=False)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello",
        "reasoning_content": "hm",
    }
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == 13


def test_queue_is_fifo_then_default(fake: FakeUpstream) -> None:
    fake.enqueue(Script.stream(["one"]), Script.stream(["two"]))
    fake.default = Script.stream(["dflt"])
    texts = [
        json.loads(payloads(post(fake).content)[1])["choices"][0]["delta"]["content"]
        for _ in range(3)
    ]
    assert texts == ["one", "two", "dflt"]


def test_requests_are_recorded(fake: FakeUpstream) -> None:
    post(fake, headers={"Authorization": "Bearer k", "X-Custom": "v"})
    [request] = fake.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer k"
    assert request.headers["x-custom"] == "v"
    assert request.json["model"] == "fake-model"
    assert json.loads(request.body) == request.json


@pytest.mark.parametrize(
    ("body", "content_type", "raw"),
    [
        ({"error": {"message": "m"}}, "application/json", b'{"error": {"message": "m"}}'),
        ("plain words", "text/plain", b"plain words"),
        ("<html><p>x</p></html>", "text/html; charset=utf-8", b"<html><p>x</p></html>"),
        (b"\x00raw", None, b"\x00raw"),
        (None, None, b""),
    ],
)
def test_error_scripts(
    fake: FakeUpstream, body: object, content_type: str | None, raw: bytes
) -> None:
    fake.enqueue(Script.error(503, body, {"Retry-After": "3"}))  # type: ignore[arg-type]
    response = post(fake)
    assert response.status_code == 503
    assert response.content == raw
    assert response.headers.get("content-type") == content_type
    assert response.headers["retry-after"] == "3"


async def test_raw_script_keeps_the_network_chunks(fake: FakeUpstream) -> None:
    chunks = [b'data: {"a"', b":1}\n", b"\n", b"data: [DONE]"]
    fake.enqueue(
        Script.raw(
            headers={"Content-Type": "text/event-stream", "X-A": "1"}, chunks=chunks, delays=0.02
        )
    )
    url = f"{fake.base_url}/chat/completions"
    async with httpx.AsyncClient() as client, client.stream("POST", url, json={}) as response:
        assert response.headers["x-a"] == "1"
        received = [part async for part in response.aiter_raw()]
    assert received == chunks


def test_raw_script_with_content_length(fake: FakeUpstream) -> None:
    fake.enqueue(Script.raw(headers={"content-length": "5"}, chunks=[b"ab", b"cde"]))
    response = post(fake)
    assert response.content == b"abcde"
    assert "transfer-encoding" not in response.headers


def test_json_script(fake: FakeUpstream) -> None:
    fake.enqueue(Script.json({"ok": True}, status=201))
    response = post(fake)
    assert response.status_code == 201
    assert response.json() == {"ok": True}


def test_then_close_breaks_the_body(fake: FakeUpstream) -> None:
    fake.enqueue(Script.stream(["a"], then="close"))
    with pytest.raises(httpx.RemoteProtocolError):
        post(fake)
    assert fake.disconnects == 0  # the server hung up, not the client


def test_stall_and_client_disconnect_is_recorded(fake: FakeUpstream) -> None:
    fake.enqueue(Script.stream(["a"], then="stall"))
    assert not fake.wait_for_disconnect(0.05)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{fake.base_url}/chat/completions", json={"stream": True}, timeout=0.3)
    assert fake.wait_for_disconnect(2)
    assert fake.disconnects == 1


def test_hang_never_answers(fake: FakeUpstream) -> None:
    fake.enqueue(Script.hang())
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        post(fake, timeout=0.3)
    assert time.perf_counter() - started >= 0.3
    assert fake.wait_for_disconnect(2)


async def test_wait_for_disconnect_async(fake: FakeUpstream) -> None:
    fake.enqueue(Script.hang())
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{fake.base_url}/chat/completions", json={}, timeout=0.2)
    assert await fake.wait_for_disconnect_async(2)


def test_reset_forgets_everything_including_late_disconnects(fake: FakeUpstream) -> None:
    fake.enqueue(Script.hang())
    with httpx.Client() as client:
        # Start a request that hangs, then reset before the client goes away.
        with pytest.raises(httpx.ReadTimeout):
            client.post(f"{fake.base_url}/chat/completions", json={}, timeout=0.1)
        fake.enqueue(Script.stream(["x"]))
        fake.default = Script.stream(["changed"])
        fake.models = ["other"]
        fake.api_key = "k"
    time.sleep(0.1)
    fake.reset()
    assert fake.requests == []
    assert fake.disconnects == 0
    assert fake.api_key is None
    assert fake.models == ["fake-model", "fake-model-large"]
    assert "Hello" in post(fake).text


def test_late_disconnect_after_reset_is_not_counted(fake: FakeUpstream) -> None:
    fake.enqueue(Script.hang())

    async def hang_then_reset() -> None:
        async with httpx.AsyncClient() as client:
            task = asyncio.create_task(client.post(f"{fake.base_url}/chat/completions", json={}))
            assert await asyncio.to_thread(fake.wait_for_requests, 1)
            fake.reset()  # the hanging answer began before the reset
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(hang_then_reset())
    assert not fake.wait_for_disconnect(0.3)


def test_models_route(fake: FakeUpstream) -> None:
    fake.models = ["b", "a"]
    body = httpx.get(f"{fake.base_url}/models").json()
    assert [item["id"] for item in body["data"]] == ["b", "a"]
    fake.enqueue(Script.error(500, "down"), route="models")
    assert httpx.get(f"{fake.base_url}/models").status_code == 500
    assert httpx.get(f"{fake.base_url}/models").status_code == 200


def test_api_key_is_enforced_when_set(fake: FakeUpstream) -> None:
    fake.api_key = "right"
    response = post(fake, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert "wrong" in response.json()["error"]["message"]  # echoed, like some gateways
    assert post(fake, headers={"Authorization": "Bearer right"}).status_code == 200


def test_unknown_path_is_404(fake: FakeUpstream) -> None:
    assert httpx.get(f"{fake.base_url}/nothing").status_code == 404


def test_keep_alive_serves_several_requests_on_one_connection(fake: FakeUpstream) -> None:
    with httpx.Client() as client:
        for _ in range(3):
            response = client.post(f"{fake.base_url}/chat/completions", json={"stream": True})
            assert response.status_code == 200
        pool = client._transport._pool  # type: ignore[attr-defined]
        assert len(pool.connections) == 1


async def test_concurrent_streams_keep_their_pace(fake: FakeUpstream) -> None:
    # A scaled-down version of the benchmark load: 100 streams of 40 tokens 5 ms apart.
    fake.default = Script.tokens(n=40, delay=0.005)
    limits = httpx.Limits(max_connections=200)

    async def one(client: httpx.AsyncClient) -> int:
        async with client.stream(
            "POST", f"{fake.base_url}/chat/completions", json={"stream": True}
        ) as response:
            return b"".join([part async for part in response.aiter_raw()]).count(b'"tok')

    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        counts = await asyncio.gather(*(one(client) for _ in range(100)))
    elapsed = time.perf_counter() - started
    assert counts == [40] * 100
    assert elapsed < 2.5  # 0.2 s of pacing; generous for a shared CI machine


def test_command_line() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fake_upstream",
            "--port",
            "0",
            "--tokens",
            "3",
            "--delay",
            "0",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        response = httpx.post(f"{base_url}/chat/completions", json={"stream": True}, timeout=5)
        assert response.text.count('"tok') == 3
    finally:
        process.terminate()
        process.wait(5)
