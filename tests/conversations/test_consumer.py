"""The chat websocket, over the real ASGI stack, against the fake upstream on loopback."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async

from conversations.models import Conversation, Message
from tests.conversations.wsclient import open_socket, receive_until, settle, streamed_text
from tests.factories import make_chat_model, make_conversation, make_user
from tests.fake_upstream import Script

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async


@pytest.fixture
async def chat_model(fake_upstream):
    return await db(make_chat_model)(fake_upstream.base_url)


@pytest.fixture
async def alice():
    return await db(make_user)("alice")


def _messages(conversation_id) -> list[Message]:
    return list(Message.objects.filter(conversation_id=conversation_id).order_by("id"))


async def _send(communicator, content: str, conversation: str | None = None, client_id=None):
    await communicator.send_json_to(
        {
            "type": "send",
            "conversation": conversation,
            "content": content,
            "client_id": str(client_id or uuid.uuid4()),
        }
    )


async def test_anonymous_socket_is_refused():
    communicator, connected = await open_socket(None)
    assert not connected
    await communicator.disconnect()


async def test_socket_from_a_foreign_origin_is_refused(alice):
    communicator, connected = await open_socket(alice, origin="https://evil.example")
    assert not connected
    await communicator.disconnect()


async def test_send_streams_the_reply_and_stores_both_messages(alice, chat_model, fake_upstream):
    fake_upstream.enqueue(Script.stream(["The ", "answer ", "is ", "42."], delay=0.01))
    communicator, connected = await open_socket(alice)
    assert connected
    await _send(communicator, "What is the answer?")
    frames = await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()

    kinds = [frame["type"] for frame in frames]
    assert kinds[0] == "conversation"
    # A new chat gets its Rename and Delete controls without a reload.
    assert "Rename" in frames[0]["header_html"] and "Delete" in frames[0]["header_html"]
    assert kinds.count("message") == 2
    assert "reply.delta" in kinds
    assert streamed_text(frames) == "The answer is 42."
    done = frames[-1]
    assert done["status"] == "complete"
    assert "The answer is 42." in done["html"]

    conversation_id = frames[0]["conversation"]
    user_message, reply = await db(_messages)(conversation_id)
    assert (user_message.role, user_message.content) == ("user", "What is the answer?")
    assert (reply.role, reply.content, reply.status) == (
        "assistant",
        "The answer is 42.",
        "complete",
    )
    assert reply.parent_id == user_message.id
    assert reply.finish_reason == "stop"
    assert reply.prompt_tokens == 10 and not reply.usage_estimated

    request = fake_upstream.requests[-1]
    assert request.headers["authorization"] == "Bearer sk-test-secret-key"
    assert request.json["stream"] is True
    assert request.json["model"] == "fake-model"
    assert request.json["messages"][-1] == {"role": "user", "content": "What is the answer?"}


async def test_follow_up_sends_the_history(alice, chat_model, fake_upstream):
    communicator, _ = await open_socket(alice)
    await _send(communicator, "First question")
    frames = await receive_until(communicator, "reply.done")
    conversation_id = frames[0]["conversation"]
    await _send(communicator, "Second question", conversation=conversation_id)
    await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()

    sent = fake_upstream.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == "Hello, world!"
    assert len(await db(_messages)(conversation_id)) == 4


async def test_someone_elses_conversation_answers_like_a_missing_one(alice, chat_model):
    bob = await db(make_user)("bob")
    bobs = await db(make_conversation)(bob, model=chat_model, turns=1)
    communicator, _ = await open_socket(alice)

    answers = []
    for target in (str(bobs.id), str(uuid.uuid4())):
        await _send(communicator, "let me in", conversation=target)
        answers.append(await communicator.receive_json_from())
        await communicator.send_json_to({"type": "subscribe", "conversation": target})
        answers.append(await communicator.receive_json_from())
        await communicator.send_json_to({"type": "stop", "conversation": target})
        answers.append(await communicator.receive_json_from())
    await communicator.disconnect()

    for answer in answers:
        assert answer["type"] == "error"
        assert answer["code"] == "not_found"
    assert [a["message"] for a in answers[:3]] == [a["message"] for a in answers[3:]]
    assert await db(Message.objects.filter(conversation=bobs).count)() == 2


async def test_stop_ends_the_upstream_request_and_keeps_the_partial_reply(
    alice, chat_model, fake_upstream
):
    fake_upstream.enqueue(Script.tokens(n=400, delay=0.02))
    communicator, _ = await open_socket(alice)
    await _send(communicator, "Tell me a long story")
    frames = await receive_until(communicator, "reply.delta")
    conversation_id = frames[0]["conversation"]
    await communicator.send_json_to({"type": "stop", "conversation": conversation_id})
    frames += await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()

    assert await fake_upstream.wait_for_disconnect_async(timeout=2)
    done = frames[-1]
    assert done["status"] == "stopped"
    reply = (await db(_messages)(conversation_id))[-1]
    assert reply.status == "stopped"
    assert reply.content.startswith("tok0 ")
    assert len(reply.content) < len("".join(f"tok{i} " for i in range(400)))
    # What the browser was shown is exactly what was stored.
    assert reply.content == streamed_text(frames)


async def test_reply_goes_on_and_is_stored_after_the_browser_leaves(
    alice, chat_model, fake_upstream
):
    fake_upstream.enqueue(Script.tokens(n=30, delay=0.01))
    communicator, _ = await open_socket(alice)
    await _send(communicator, "Write something")
    frames = await receive_until(communicator, "reply.delta")
    await communicator.disconnect()
    await settle()

    reply = (await db(_messages)(frames[0]["conversation"]))[-1]
    assert reply.status == "complete"
    assert reply.content == "".join(f"tok{i} " for i in range(30))
    assert fake_upstream.disconnects == 0


async def test_a_page_opened_later_sees_the_reply_so_far_then_the_rest(
    alice, chat_model, fake_upstream
):
    fake_upstream.enqueue(Script.tokens(n=40, delay=0.01))
    first, _ = await open_socket(alice)
    await _send(first, "Write something")
    frames = await receive_until(first, "reply.delta")
    conversation_id = frames[0]["conversation"]
    await first.disconnect()

    second, _ = await open_socket(alice)
    await second.send_json_to({"type": "subscribe", "conversation": conversation_id})
    later = await receive_until(second, "reply.done")
    await second.disconnect()
    await settle()

    assert later[0]["type"] == "reply.snapshot"
    assert streamed_text(later) == "".join(f"tok{i} " for i in range(40))


async def test_the_same_message_sent_twice_is_stored_and_answered_once(
    alice, chat_model, fake_upstream
):
    communicator, _ = await open_socket(alice)
    await _send(communicator, "Hello")
    frames = await receive_until(communicator, "reply.done")
    conversation_id = frames[0]["conversation"]
    client_id = uuid.uuid4()
    await _send(communicator, "Once only", conversation=conversation_id, client_id=client_id)
    await receive_until(communicator, "reply.done")
    await _send(communicator, "Once only", conversation=conversation_id, client_id=client_id)
    again = await receive_until(communicator, "message")
    again += await receive_until(communicator, "message")
    await communicator.disconnect()
    await settle()

    assert len(await db(_messages)(conversation_id)) == 4
    assert len(fake_upstream.requests) == 2
    assert again[-1]["status"] == "complete"


async def test_a_second_message_while_a_reply_streams_is_refused_and_not_stored(
    alice, chat_model, fake_upstream
):
    fake_upstream.enqueue(Script.tokens(n=50, delay=0.02))
    communicator, _ = await open_socket(alice)
    await _send(communicator, "First")
    frames = await receive_until(communicator, "reply.delta")
    conversation_id = frames[0]["conversation"]
    await _send(communicator, "Second", conversation=conversation_id)
    refused = await receive_until(communicator, "error")
    await communicator.send_json_to({"type": "stop", "conversation": conversation_id})
    await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()

    assert refused[-1]["code"] == "busy"
    assert "still being written" in refused[-1]["message"]
    contents = [m.content for m in await db(_messages)(conversation_id)]
    assert "Second" not in contents


async def test_an_oversize_message_is_refused_with_its_size_and_nothing_is_stored(
    alice, chat_model, settings
):
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    communicator, _ = await open_socket(alice)
    await _send(communicator, "x" * 101)
    answer = await communicator.receive_json_from()
    await communicator.disconnect()

    assert answer["code"] == "too_long"
    assert "101 characters" in answer["message"] and "100" in answer["message"]
    assert await db(Conversation.objects.count)() == 0


async def test_an_oversize_frame_is_refused(alice, chat_model, settings):
    settings.CHAT_MAX_FRAME_BYTES = 1000
    communicator, _ = await open_socket(alice)
    await _send(communicator, "y" * 2000)
    answer = await communicator.receive_json_from()
    await communicator.disconnect()
    assert answer["code"] == "frame_too_large"
    assert await db(Message.objects.count)() == 0


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            Script.error(
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided: sk-test-secret-key",
                        "type": "invalid_request_error",
                    }
                },
            ),
            "Incorrect API key provided",
        ),
        (
            Script.error(
                404,
                {
                    "error": {
                        "message": "The model `nope` does not exist",
                        "type": "invalid_request_error",
                    }
                },
            ),
            "does not exist",
        ),
        (
            Script.error(
                400,
                {
                    "error": {
                        "message": "Budget has been exceeded! Current cost: 1.2",
                        "type": "budget_exceeded",
                    }
                },
            ),
            "Budget has been exceeded",
        ),
    ],
)
async def test_provider_errors_show_the_providers_message_and_never_the_key(
    alice, chat_model, fake_upstream, script, expected
):
    fake_upstream.enqueue(script)
    communicator, _ = await open_socket(alice)
    await _send(communicator, "Hi")
    frames = await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()

    done = frames[-1]
    assert done["status"] == "error"
    assert expected in done["html"]
    assert "sk-test-secret-key" not in done["html"]
    reply = (await db(_messages)(frames[0]["conversation"]))[-1]
    assert reply.status == "error" and expected in reply.error
    assert "sk-test-secret-key" not in reply.error


async def test_a_rate_limit_with_a_long_retry_after_fails_at_once_with_the_wait(
    alice, chat_model, fake_upstream
):
    fake_upstream.enqueue(
        Script.error(
            429,
            {"error": {"message": "Rate limit reached for requests", "type": "requests"}},
            headers={"Retry-After": "120"},
        )
    )
    communicator, _ = await open_socket(alice)
    await _send(communicator, "Hi")
    frames = await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()
    reply = (await db(_messages)(frames[0]["conversation"]))[-1]
    assert reply.status == "error" and reply.error_kind == "rate_limit"
    assert "Rate limit reached" in reply.error and "120" in reply.error
    assert len(fake_upstream.requests) == 1  # not retried: the wait is beyond the cap


async def test_an_upstream_that_never_answers_times_out_with_a_message(alice, fake_upstream):
    await db(make_chat_model)(fake_upstream.base_url, first_byte_timeout=0.3, max_retries=0)
    fake_upstream.enqueue(Script.hang())
    communicator, _ = await open_socket(alice)
    await _send(communicator, "Hi")
    frames = await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()
    reply = (await db(_messages)(frames[0]["conversation"]))[-1]
    assert (reply.status, reply.error_kind) == ("error", "timeout")
    assert reply.error


async def test_connection_refused_is_reported_in_the_conversation(alice):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await db(make_chat_model)(f"http://127.0.0.1:{port}/v1", max_retries=0)
    communicator, _ = await open_socket(alice)
    await _send(communicator, "Hi")
    frames = await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()
    assert frames[-1]["status"] == "error"
    reply = (await db(_messages)(frames[0]["conversation"]))[-1]
    assert reply.error_kind == "connect"
    assert reply.error


async def test_a_stalled_upstream_times_out_and_keeps_the_text(alice, fake_upstream):
    await db(make_chat_model)(fake_upstream.base_url, idle_timeout=0.3)
    fake_upstream.enqueue(Script.stream(["partial ", "text"], then="stall"))
    communicator, _ = await open_socket(alice)
    await _send(communicator, "Hi")
    frames = await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()
    reply = (await db(_messages)(frames[0]["conversation"]))[-1]
    assert reply.status == "interrupted"
    assert reply.content == "partial text"


async def test_reasoning_is_streamed_and_stored_apart_from_the_answer(
    alice, chat_model, fake_upstream
):
    fake_upstream.enqueue(Script.stream(["42"], reasoning=["Let me ", "think."]))
    communicator, _ = await open_socket(alice)
    await _send(communicator, "Hi")
    frames = await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()
    reply = (await db(_messages)(frames[0]["conversation"]))[-1]
    assert (reply.content, reply.reasoning) == ("42", "Let me think.")
    assert "Reasoning" in frames[-1]["html"]


async def test_streaming_writes_are_bounded_by_time_not_tokens(
    alice, chat_model, fake_upstream, settings, monkeypatch
):
    import time

    from conversations import services

    settings.CHAT_FLUSH_INTERVAL = 0.25
    calls = {"flush": 0, "finish": 0}
    real_flush, real_finish = services.reply_flush, services.reply_finish

    def counting_flush(**kwargs):
        calls["flush"] += 1
        return real_flush(**kwargs)

    def counting_finish(**kwargs):
        calls["finish"] += 1
        return real_finish(**kwargs)

    monkeypatch.setattr(services, "reply_flush", counting_flush)
    monkeypatch.setattr(services, "reply_finish", counting_finish)
    fake_upstream.enqueue(Script.tokens(n=150, delay=0.005))

    communicator, _ = await open_socket(alice)
    started = time.monotonic()
    await _send(communicator, "Go")
    frames = await receive_until(communicator, "reply.done", timeout=10)
    duration = time.monotonic() - started
    await communicator.disconnect()
    await settle()

    reply = (await db(_messages)(frames[0]["conversation"]))[-1]
    assert reply.content == "".join(f"tok{i} " for i in range(150))
    assert calls["finish"] == 1
    # Bounded by the stream's duration in flush intervals, not by its 150 tokens.
    assert calls["flush"] <= duration / settings.CHAT_FLUSH_INTERVAL + 2
    deltas = [f for f in frames if f["type"] == "reply.delta"]
    assert sum(len(f["content"]) for f in deltas) == len(reply.content)
