"""One reply, many views: two tabs, a tab that reconnects, a resend, Stop from another tab, and a
frame lost between processes. Over the real ASGI stack, against the fake upstream; pages are
followed with chat.js's rules (tests/livestack.py's ReplyFollower)."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from conversations import services
from conversations.generation import ConversationHub
from conversations.models import Message
from tests.conversations.wsclient import (
    CommunicatorSocket,
    open_socket,
    receive_until,
    settle,
    streamed_text,
)
from tests.factories import make_chat_model, make_conversation, make_user
from tests.fake_upstream import Script
from tests.livestack import ReplyFollower

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async
FULL_40 = "".join(f"tok{i} " for i in range(40))


@pytest.fixture
async def alice():
    return await db(make_user)("alice")


@pytest.fixture
async def chat_model(fake_upstream):
    return await db(make_chat_model)(fake_upstream.base_url)


def _messages(conversation_id) -> list[Message]:
    return list(Message.objects.filter(conversation_id=conversation_id).order_by("id"))


async def _send(communicator, content, conversation=None, client_id=None) -> str:
    client_id = str(client_id or uuid.uuid4())
    await communicator.send_json_to(
        {"type": "send", "conversation": conversation, "content": content, "client_id": client_id}
    )
    return client_id


async def _follow(user, conversation: str) -> tuple[object, ReplyFollower]:
    communicator, connected = await open_socket(user)
    assert connected
    follower = ReplyFollower(CommunicatorSocket(communicator), conversation)  # type: ignore[arg-type]
    await follower.subscribe()
    return communicator, follower


async def test_two_tabs_on_one_conversation_both_stream_the_reply(alice, chat_model, fake_upstream):
    fake_upstream.enqueue(Script.tokens(n=40, delay=0.01))
    first, _ = await open_socket(alice)
    await _send(first, "Both tabs, please")
    opened = await receive_until(first, "conversation")
    conversation = opened[-1]["conversation"]
    second, follower = await _follow(alice, conversation)

    frames = opened + await receive_until(first, "reply.done")
    await follower.until_done()
    await first.disconnect()
    await second.disconnect()
    await settle()

    reply = (await db(_messages)(conversation))[-1]
    assert reply.content == FULL_40 and reply.status == "complete"
    assert streamed_text(frames) == FULL_40
    assert follower.content == FULL_40
    # The second tab saw the reply live, not only at the end.
    assert any(f["type"] == "reply.delta" for f in follower.frames)
    assert follower.done["status"] == "complete"


async def test_a_reconnecting_tab_gets_only_what_it_missed(alice, chat_model, fake_upstream):
    fake_upstream.enqueue(Script.tokens(n=40, delay=0.01))
    tab, _ = await open_socket(alice)
    await _send(tab, "Write something")
    frames = await receive_until(tab, "reply.delta")
    while streamed_text(frames).count(" ") < 5:
        frames += await receive_until(tab, "reply.delta")
    conversation = frames[0]["conversation"]
    held_text = streamed_text(frames)
    held = frames[-1]
    await tab.disconnect()  # the network drops
    await asyncio.sleep(0.1)  # the reply goes on meanwhile

    again, _ = await open_socket(alice)
    await again.send_json_to(
        {
            "type": "subscribe",
            "conversation": conversation,
            "message": held["message"],
            "seq": held["seq"],
        }
    )
    after = await receive_until(again, "reply.done")
    await again.disconnect()
    await settle()

    first = after[0]
    # What it missed, from exactly where it was: no snapshot, no repeat, no gap.
    assert first["type"] == "reply.delta"
    assert first["from"] == held["seq"]
    assert not [f for f in after if f["type"] == "reply.snapshot"]
    deltas = [f for f in after if f["type"] == "reply.delta"]
    for before, following in itertools.pairwise(deltas):
        assert following["from"] == before["seq"]
    assert held_text + "".join(f["content"] for f in deltas) == FULL_40
    reply = (await db(_messages)(conversation))[-1]
    assert reply.content == FULL_40


async def test_a_tab_back_after_the_reply_ended_gets_the_stored_end(
    alice, chat_model, fake_upstream
):
    fake_upstream.enqueue(Script.tokens(n=40, delay=0.005))
    tab, _ = await open_socket(alice)
    await _send(tab, "Write something")
    frames = await receive_until(tab, "reply.delta")
    conversation, held = frames[0]["conversation"], frames[-1]
    await tab.disconnect()
    await settle()  # the reply ends while the tab is away

    again, _ = await open_socket(alice)
    await again.send_json_to(
        {
            "type": "subscribe",
            "conversation": conversation,
            "message": held["message"],
            "seq": held["seq"],
        }
    )
    after = await receive_until(again, "subscribed")
    await again.disconnect()

    done, subscribed = after
    assert done["type"] == "reply.done" and done["message"] == held["message"]
    assert done["status"] == "complete"
    assert "tok39" in done["html"]
    assert subscribed["streaming"] is False


async def test_a_resend_after_reconnecting_is_stored_and_answered_once(
    alice, chat_model, fake_upstream
):
    fake_upstream.enqueue(Script.tokens(n=40, delay=0.01))
    conversation = await db(make_conversation)(alice, model=chat_model, turns=1)
    tab, _ = await open_socket(alice)
    client_id = await _send(tab, "Only once", conversation=str(conversation.id))
    await receive_until(tab, "reply.delta")
    await tab.disconnect()  # the page did not see its message confirmed, so it sends again

    again, _ = await open_socket(alice)
    await _send(again, "Only once", conversation=str(conversation.id), client_id=client_id)
    frames = await receive_until(again, "reply.done")
    await again.disconnect()
    await settle()

    messages = await db(_messages)(conversation.id)
    assert [m.content for m in messages if m.role == "user"] == ["question 0", "Only once"]
    assert len(messages) == 4
    assert len(fake_upstream.requests) == 1
    # The resent page is shown the stored pair and the reply where it stands, then the rest.
    mine = [f for f in frames if f["type"] == "message"]
    assert [f["client_id"] for f in mine] == [client_id, client_id]
    assert frames[2]["type"] == "reply.snapshot"
    assert streamed_text(frames) == FULL_40 == messages[-1].content


async def test_stop_from_a_second_tab_stops_the_reply_for_both(alice, chat_model, fake_upstream):
    fake_upstream.enqueue(Script.tokens(n=2000, delay=0.01))
    first, _ = await open_socket(alice)
    await _send(first, "A long story")
    opened = await receive_until(first, "conversation")
    conversation = opened[-1]["conversation"]
    second, follower = await _follow(alice, conversation)
    await follower.until(lambda f: len(f.content) > 0)

    await second.send_json_to({"type": "stop", "conversation": conversation})
    done_second = await follower.until_done()
    frames = await receive_until(first, "reply.done")
    await first.disconnect()
    await second.disconnect()
    await settle()

    assert done_second["status"] == frames[-1]["status"] == "stopped"
    assert await fake_upstream.wait_for_disconnect_async(timeout=5)
    reply = (await db(_messages)(conversation))[-1]
    assert reply.status == "stopped"
    assert reply.content.startswith("tok0 ") and len(reply.content) < len(FULL_40) * 50
    assert follower.content == reply.content == streamed_text(opened + frames)


class DroppingLayer:
    """A channel layer that loses some of the frames published to other processes."""

    def __init__(self, layer, drop: set[int]) -> None:
        self.layer = layer
        self.drop = drop
        self.deltas = 0
        self.dropped: list[dict] = []

    def __getattr__(self, name: str):
        return getattr(self.layer, name)

    async def group_send(self, group: str, message: dict) -> None:
        frame = message.get("frame") or {}
        if message.get("type") == "chat.frame" and frame.get("type") == "reply.delta":
            self.deltas += 1
            if self.deltas in self.drop:
                self.dropped.append(frame)
                return
        await self.layer.group_send(group, message)


@pytest.fixture
def redis_layer(settings):
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # As chatsite/settings.py configures it.
                "hosts": [{"address": url, "socket_timeout": 30, "max_connections": 1000}],
                "capacity": 2000,
                "prefix": f"test-{uuid.uuid4().hex[:8]}",
            },
        }
    }
    settings.CHAT_REMOTE_FRAME_INTERVAL = 0.02
    yield
    get_channel_layer()  # rebuilt from the restored settings on next use


async def test_a_frame_lost_between_processes_is_repaired_from_the_sender(
    alice, chat_model, fake_upstream, redis_layer
):
    """The reply runs in "another process" (a second hub on the same Redis) whose channel layer
    drops two of the frames it publishes; the page notices the gap by the sequence numbers, asks
    to resume, and ends with the whole text, no hole and nothing twice."""
    fake_upstream.enqueue(Script.tokens(n=60, delay=0.01))
    conversation = await db(make_conversation)(alice, model=chat_model)
    outcome = await db(services.message_send)(
        user=alice, conversation_id=conversation.id, content="Go"
    )
    communicator, follower = await _follow(alice, str(conversation.id))
    await follower.until(lambda f: any(x["type"] == "subscribed" for x in f.frames))

    other = ConversationHub()
    await other.ensure_started()
    assert other.cross_process
    lossy = DroppingLayer(other._layer, drop={3, 6})
    other._layer = lossy
    try:
        await other.start(outcome.plan)
        done = await follower.until_done()
        await other.wait_all()
    finally:
        for task in (other._reader, other._publisher):
            if task is not None:
                task.cancel()
        await communicator.disconnect()

    expected = "".join(f"tok{i} " for i in range(60))
    assert len(lossy.dropped) == 2
    assert follower.gaps >= 1  # the page saw the hole ...
    assert follower.content == expected  # ... and filled it
    assert done["status"] == "complete"
    reply = (await db(_messages)(conversation.id))[-1]
    assert reply.content == expected
