"""The two websocket size limits, on a real daphne started as scripts/run.sh starts it: the app's
own (CHAT_MAX_FRAME_BYTES, answered with a readable error, the socket stays open) and daphne's
(CHAT_WEBSOCKET_MAX_MESSAGE_BYTES, the socket is closed with 1009 before the app reads a byte)."""

from __future__ import annotations

import json

import pytest
import websockets
from channels.db import database_sync_to_async
from django.test import Client

from conversations.models import Message
from tests.factories import make_user
from tests.livestack import Daphne, app_environment, connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture
def server(tmp_path):
    env = app_environment(
        tmp_path, CHAT_MAX_FRAME_BYTES="20000", CHAT_WEBSOCKET_MAX_MESSAGE_BYTES="50000"
    )
    if env is None:
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")
    daphne = Daphne(env).start()
    yield daphne
    daphne.stop()


@pytest.fixture
def session_cookie() -> str:
    client = Client()
    client.force_login(make_user("alice"))
    return client.cookies["sessionid"].value


def _send_frame(size: int) -> str:
    frame = {"type": "send", "conversation": None, "content": "", "client_id": None}
    frame["content"] = "x" * (size - len(json.dumps(frame)))
    return json.dumps(frame)


async def test_a_frame_over_the_apps_limit_gets_a_readable_error(server, session_cookie):
    socket = await connect(server, session_cookie)
    try:
        await socket.send(_send_frame(30_000))
        answer = json.loads(await socket.recv())
        # Still open: the page can go on.
        await socket.send(json.dumps({"type": "subscribe", "conversation": "nope"}))
        after = json.loads(await socket.recv())
    finally:
        await socket.close()
    assert answer["code"] == "frame_too_large"
    assert "too large to send (over 19 KB)" in answer["message"]
    assert after["code"] == "not_found"
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_a_frame_over_daphnes_limit_closes_the_socket(server, session_cookie):
    socket = await connect(server, session_cookie)
    await socket.send(_send_frame(60_000))
    # autobahn drops the connection (no closing handshake: the browser sees code 1006).
    with pytest.raises(websockets.ConnectionClosed):
        await socket.recv()
    # The server itself is unharmed.
    again = await connect(server, session_cookie)
    try:
        await again.send(json.dumps({"type": "subscribe", "conversation": "nope"}))
        assert json.loads(await again.recv())["code"] == "not_found"
    finally:
        await again.close()
    assert await database_sync_to_async(Message.objects.count)() == 0
