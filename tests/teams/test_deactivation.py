"""A deactivated user loses access at once: their open sockets close and their running replies
stop, in this process and (through channels-redis) in other daphne processes."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from websockets.exceptions import ConnectionClosed

from conversations.models import Message
from tests.conversations.wsclient import open_socket, receive_until, settle
from tests.factories import make_chat_model, make_user
from tests.fake_upstream import Script
from tests.livestack import Daphne, ReplyFollower, connect
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _deactivate(user_id: int) -> None:
    # As the Django admin's change form does: a save() of the user with is_active off.
    user = get_user_model().objects.get(pk=user_id)
    user.is_active = False
    user.save()


async def _until_closed(communicator, timeout: float = 10) -> dict:
    while True:
        output = await communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return output


async def test_deactivating_a_user_closes_their_sockets_and_stops_their_replies(fake_upstream):
    alice = await db(make_user)("alice")
    bob = await db(make_user)("bob")
    await db(make_chat_model)(fake_upstream.base_url)
    fake_upstream.enqueue(Script.tokens(n=3000, delay=0.02))
    socket, _ = await open_socket(alice)
    second_tab, _ = await open_socket(alice)
    bobs, _ = await open_socket(bob)
    await socket.send_json_to(
        {
            "type": "send",
            "conversation": None,
            "content": "A long story",
            "client_id": str(uuid.uuid4()),
        }
    )
    await receive_until(socket, "reply.delta")

    await db(_deactivate)(alice.pk)

    assert (await _until_closed(socket))["code"] == 4403
    assert (await _until_closed(second_tab))["code"] == 4403
    await settle()
    assert await fake_upstream.wait_for_disconnect_async(timeout=5)
    reply = await db(Message.objects.get)(role="assistant")
    assert reply.status == "stopped" and reply.content.startswith("tok0 ")
    record = await db(UsageRecord.objects.get)()
    assert record.outcome == "stopped"
    # Someone else's socket is untouched.
    assert await bobs.receive_nothing(timeout=0.3)
    await bobs.disconnect()
    # And the deactivated user cannot come back.
    again, connected = await open_socket(alice)
    assert not connected
    await again.disconnect()


def _database_url() -> str:
    db_settings = connection.settings_dict
    if db_settings["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the multi-process test needs PostgreSQL (set DATABASE_URL)")
    host = db_settings["HOST"] or "127.0.0.1"
    return f"postgres://{db_settings['USER']}@{host}:{db_settings['PORT'] or 5432}/{db_settings['NAME']}"


@pytest.fixture
def daphne_pair(tmp_path):
    env = {
        "DATABASE_URL": _database_url(),
        "DATABASE_POOL": "0",
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
        "VAR_DIR": str(tmp_path),
        "DEBUG": "true",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    servers = [Daphne(env).start(), Daphne(env).start()]
    yield servers
    for server in servers:
        server.stop()


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@pytest.mark.timeout(120)
async def test_deactivation_from_another_process_reaches_every_daphne(
    daphne_pair, fake_upstream, settings
):
    alice = await db(make_user)("alice")
    await db(make_chat_model)(fake_upstream.base_url)
    cookie = await db(_session_cookie)(alice)
    fake_upstream.enqueue(Script.tokens(n=3000, delay=0.02))
    first, second = daphne_pair
    socket_a = await connect(first, cookie)
    socket_b = await connect(second, cookie)
    try:
        await socket_a.send(
            json.dumps(
                {
                    "type": "send",
                    "conversation": None,
                    "content": "Go",
                    "client_id": str(uuid.uuid4()),
                }
            )
        )
        conversation = None
        while conversation is None:
            frame = json.loads(await socket_a.recv())
            if frame["type"] == "conversation":
                conversation = frame["conversation"]
        follower = ReplyFollower(socket_a, conversation)
        await follower.until(lambda f: len(f.content) > 0)
        # The reply goes on in process A with no socket there: only A's hub can stop it.
        await socket_a.close()

        # This test process is a third process (think: the admin served elsewhere, or a shell):
        # it reaches the others only through Redis.
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [REDIS_URL]},
            }
        }
        await db(_deactivate)(alice.pk)

        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(socket_b.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    finally:
        await socket_a.close()
        await socket_b.close()

    assert await fake_upstream.wait_for_disconnect_async(timeout=10)

    def stored() -> tuple[str, str]:
        reply = Message.objects.get(role="assistant")
        record = UsageRecord.objects.get()
        return reply.status, record.outcome

    for _ in range(100):  # the reply's final write lands just after the upstream closes
        status, outcome = await db(_stored_or_none(stored))()
        if status is not None:
            break
        await asyncio.sleep(0.1)
    assert (status, outcome) == ("stopped", "stopped")


def _stored_or_none(read):
    def wrapped():
        try:
            return read()
        except (Message.DoesNotExist, UsageRecord.DoesNotExist):
            return None, None

    return wrapped
