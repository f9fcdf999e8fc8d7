"""Two daphne processes behind one Redis and one PostgreSQL behave as one app."""

from __future__ import annotations

import json
import os

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from conversations.models import Message
from tests.factories import make_chat_model, make_user
from tests.fake_upstream import Script
from tests.livestack import Daphne, ReplyFollower, connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the multi-process test needs PostgreSQL (set DATABASE_URL)")
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def two_processes(tmp_path):
    env = {
        "DATABASE_URL": _database_url(),
        "DATABASE_POOL": "0",
        "REDIS_URL": REDIS_URL,
        # Sessions are checked against the secret key: the same one as this test process.
        "SECRET_KEY": settings.SECRET_KEY,
        "VAR_DIR": str(tmp_path),
        "DEBUG": "true",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    servers = [Daphne(env).start(), Daphne(env).start()]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def session_cookie() -> str:
    user = make_user("alice")
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def _start_conversation(socket, text: str) -> str:
    await socket.send(
        json.dumps(
            {
                "type": "send",
                "conversation": None,
                "content": text,
                "client_id": "00000000-0000-4000-8000-000000000001",
            }
        )
    )
    while True:
        frame = json.loads(await socket.recv())
        if frame["type"] == "conversation":
            return frame["conversation"]
        assert frame["type"] != "error", frame


async def test_a_reply_started_on_one_process_streams_live_on_the_other(
    two_processes, session_cookie, fake_upstream
):
    make_chat_model_sync = make_chat_model  # created before the processes read the database
    from channels.db import database_sync_to_async

    await database_sync_to_async(make_chat_model_sync)(fake_upstream.base_url)
    fake_upstream.enqueue(Script.tokens(n=150, delay=0.02))
    first, second = two_processes
    socket_a = await connect(first, session_cookie)
    socket_b = await connect(second, session_cookie)
    try:
        conversation = await _start_conversation(socket_a, "Stream to both")
        follower_a = ReplyFollower(socket_a, conversation)
        follower_b = ReplyFollower(socket_b, conversation)
        await follower_b.subscribe()
        # Live: B sees text arrive while the reply is still streaming.
        await follower_b.until(lambda f: f.seq is not None and len(f.content) > 0)
        assert follower_b.done is None
        done_a = await follower_a.until_done()
        done_b = await follower_b.until_done()
    finally:
        await socket_a.close()
        await socket_b.close()

    expected = "".join(f"tok{i} " for i in range(150))
    assert follower_b.content == expected
    assert done_a["status"] == done_b["status"] == "complete"
    reply = await database_sync_to_async(
        lambda: Message.objects.filter(role="assistant").latest("id")
    )()
    assert reply.content == expected


async def test_stop_on_the_other_process_stops_the_reply(
    two_processes, session_cookie, fake_upstream
):
    from channels.db import database_sync_to_async

    await database_sync_to_async(make_chat_model)(fake_upstream.base_url)
    fake_upstream.enqueue(Script.tokens(n=2000, delay=0.02))
    first, second = two_processes
    socket_a = await connect(first, session_cookie)
    socket_b = await connect(second, session_cookie)
    try:
        conversation = await _start_conversation(socket_a, "A long one")
        follower_a = ReplyFollower(socket_a, conversation)
        follower_b = ReplyFollower(socket_b, conversation)
        await follower_b.subscribe()
        await follower_b.until(lambda f: len(f.content) > 0)
        await socket_b.send(json.dumps({"type": "stop", "conversation": conversation}))
        done_b = await follower_b.until_done()
        done_a = await follower_a.until_done()
    finally:
        await socket_a.close()
        await socket_b.close()

    assert done_a["status"] == done_b["status"] == "stopped"
    assert await fake_upstream.wait_for_disconnect_async(timeout=5)
    reply = await database_sync_to_async(
        lambda: Message.objects.filter(role="assistant").latest("id")
    )()
    assert reply.status == "stopped"
    assert reply.content.startswith("tok0 ")
    assert len(reply.content) < len("".join(f"tok{i} " for i in range(2000)))
