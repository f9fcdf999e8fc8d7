"""Fault scripts: each breaks a stream in one way, through the real websocket stack against the
fake upstream on loopback, and checks what was stored (text and status) and what the page saw."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async

from conversations.models import Message
from tests.conversations.wsclient import open_socket, receive_until, settle, streamed_text
from tests.factories import make_chat_model, make_user
from tests.fake_upstream import Script

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async
TOKENS = [f"word{i} " for i in range(12)]


@pytest.fixture
async def alice():
    return await db(make_user)("alice")


def _reply(conversation_id: str) -> Message:
    return Message.objects.filter(conversation_id=conversation_id, role="assistant").latest("id")


async def _run(user, content: str = "Tell me something") -> tuple[list[dict], Message]:
    """Send a message, read every frame up to reply.done, and load the stored reply."""
    communicator, connected = await open_socket(user)
    assert connected
    await communicator.send_json_to(
        {"type": "send", "conversation": None, "content": content, "client_id": str(uuid.uuid4())}
    )
    frames = await receive_until(communicator, "reply.done", timeout=15)
    await communicator.disconnect()
    await settle()
    return frames, await db(_reply)(frames[0]["conversation"])


def _sse(payload: dict | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {text}\n\n".encode()


def _content_chunk(text: str) -> bytes:
    return _sse({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


@pytest.mark.parametrize("k", [1, 5, 30])
async def test_the_browser_leaving_at_token_k_loses_nothing(alice, fake_upstream, k):
    await db(make_chat_model)(fake_upstream.base_url)
    fake_upstream.enqueue(Script.tokens(n=40, delay=0.01))
    communicator, _ = await open_socket(alice)
    await communicator.send_json_to(
        {"type": "send", "conversation": None, "content": "Go", "client_id": str(uuid.uuid4())}
    )
    frames: list[dict] = []
    while streamed_text(frames).count(" ") < k:
        frames += await receive_until(communicator, "reply.delta")
    await communicator.disconnect()  # the tab closes at token k (or a little after)
    await settle()

    reply = await db(_reply)(frames[0]["conversation"])
    assert (reply.status, reply.finish_reason) == ("complete", "stop")
    assert reply.content == "".join(f"tok{i} " for i in range(40))
    assert fake_upstream.disconnects == 0  # the upstream request was not cut short


async def test_the_upstream_closing_mid_stream_keeps_the_text_as_interrupted(alice, fake_upstream):
    await db(make_chat_model)(fake_upstream.base_url, max_retries=0)
    fake_upstream.enqueue(Script.stream(TOKENS, delay=0.005, then="close"))
    frames, reply = await _run(alice)

    assert reply.status == "interrupted"
    assert reply.content == "".join(TOKENS)
    assert reply.error_kind == "interrupted" and "broke off" in reply.error
    assert streamed_text(frames) == reply.content
    done = frames[-1]
    assert done["status"] == "interrupted"
    assert "The reply was interrupted" in done["html"]


async def test_a_stall_past_the_idle_timeout_keeps_the_text_as_interrupted(alice, fake_upstream):
    await db(make_chat_model)(fake_upstream.base_url, idle_timeout=0.3)
    fake_upstream.enqueue(Script.stream(TOKENS, delay=0.005, then="stall"))
    frames, reply = await _run(alice)

    assert reply.status == "interrupted"
    assert reply.content == "".join(TOKENS)
    assert reply.error_kind == "timeout" and "went silent" in reply.error
    assert streamed_text(frames) == reply.content
    assert frames[-1]["status"] == "interrupted"
    # The app hung up on the silent upstream rather than waiting on it.
    assert await fake_upstream.wait_for_disconnect_async(timeout=5)


async def test_an_error_object_mid_stream_keeps_the_text_and_shows_the_error(alice, fake_upstream):
    await db(make_chat_model)(fake_upstream.base_url)
    error = {"error": {"message": "The model is overloaded, try later", "type": "server_error"}}
    chunks = [_content_chunk(t) for t in TOKENS[:3]] + [_sse(error)]
    fake_upstream.enqueue(
        Script.raw(headers={"content-type": "text/event-stream"}, chunks=chunks, delays=0.005)
    )
    frames, reply = await _run(alice)

    assert reply.status == "interrupted"
    assert reply.content == "".join(TOKENS[:3])
    assert "The model is overloaded, try later" in reply.error
    assert streamed_text(frames) == reply.content
    assert "The model is overloaded, try later" in frames[-1]["html"]


async def test_an_error_object_before_any_text_is_an_error(alice, fake_upstream):
    await db(make_chat_model)(fake_upstream.base_url, max_retries=0)
    error = {"error": {"message": "Rate limit reached for requests", "code": 429}}
    fake_upstream.enqueue(
        Script.raw(headers={"content-type": "text/event-stream"}, chunks=[_sse(error)])
    )
    frames, reply = await _run(alice)

    assert (reply.status, reply.content) == ("error", "")
    assert "Rate limit reached" in reply.error
    assert "Rate limit reached" in frames[-1]["html"]


@pytest.mark.parametrize("finish_reason", ["stop", None])
async def test_a_stream_that_ends_without_done_is_complete(alice, fake_upstream, finish_reason):
    # Some servers (llama.cpp builds, proxies) end the body without "data: [DONE]", some
    # without a finish_reason either: a clean end of the body is a complete answer.
    await db(make_chat_model)(fake_upstream.base_url)
    fake_upstream.enqueue(
        Script.stream(TOKENS, delay=0.002, then="eof", finish_reason=finish_reason)
    )
    frames, reply = await _run(alice)

    assert (reply.status, reply.finish_reason) == ("complete", "stop")
    assert reply.content == "".join(TOKENS)
    assert streamed_text(frames) == reply.content
    assert frames[-1]["status"] == "complete"
