"""The daphne process is killed (SIGKILL) in the middle of a reply, then the app starts again.

The reply keeps the text its last flush stored, and is marked interrupted by the start-up check
(``setup_instance``, run by scripts/run.sh before daphne) or by the periodic sweep of a running
process, which also tells the pages that show it. Real processes, real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable

import httpx
import pytest
from channels.db import database_sync_to_async
from django.test import Client
from django.utils import timezone

from conversations.models import Message
from tests.factories import make_chat_model, make_user
from tests.fake_upstream import Script
from tests.livestack import ROOT, Daphne, ReplyFollower, app_environment, connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

ORPHAN_AFTER = 2  # seconds, instead of 30: the test waits this long for the check to apply
db = database_sync_to_async


@pytest.fixture
def app_env(tmp_path) -> dict[str, str]:
    env = app_environment(
        tmp_path,
        CHAT_ORPHAN_AFTER_SECONDS=str(ORPHAN_AFTER),
        CHAT_FLUSH_INTERVAL_MS="100",
    )
    if env is None:
        pytest.skip("the crash test needs PostgreSQL (set DATABASE_URL)")
    return env


@pytest.fixture
def session_cookie() -> str:
    client = Client()
    client.force_login(make_user("alice"))
    return client.cookies["sessionid"].value


@pytest.fixture
def servers():
    started: list[Daphne] = []
    yield started
    for server in started:
        server.stop()


def _reply() -> Message:
    return Message.objects.filter(role="assistant").latest("id")


def _seconds_since_touched(reply_id: int) -> float:
    reply = Message.objects.get(id=reply_id)
    return (timezone.now() - reply.updated_at).total_seconds()


async def _poll(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    """Wait for another process's doing, seen in the database (there is no event to await)."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def _start_and_kill(app_env, servers, session_cookie, fake_upstream) -> tuple[str, Message]:
    """Start a long reply on a server, kill the server (SIGKILL) once text has been flushed."""
    await db(make_chat_model)(fake_upstream.base_url)
    fake_upstream.enqueue(Script.tokens(n=3000, delay=0.01))
    first = Daphne(app_env).start()
    servers.append(first)
    socket = await connect(first, session_cookie)
    await socket.send(
        json.dumps(
            {"type": "send", "conversation": None, "content": "A long one", "client_id": None}
        )
    )
    conversation = None
    while conversation is None:
        frame = json.loads(await socket.recv())
        assert frame["type"] != "error", frame
        if frame["type"] == "conversation":
            conversation = frame["conversation"]
    follower = ReplyFollower(socket, conversation)
    await follower.until(lambda f: f.content.count(" ") >= 20)

    async def flushed() -> bool:
        return bool((await db(_reply)()).content)

    await _poll(flushed)
    first.kill()
    await socket.close()
    # The process died mid-answer: the upstream sees its connection closed.
    assert await fake_upstream.wait_for_disconnect_async(timeout=10)
    stored = await db(_reply)()
    assert stored.status == "streaming"
    assert stored.content.startswith("tok0 tok1 ")
    # What it had flushed: the reply up to some token, less than the whole.
    whole = "".join(f"tok{i} " for i in range(3000))
    assert whole.startswith(stored.content) and len(stored.content) < len(whole)
    return conversation, stored


async def test_after_a_kill_the_start_up_check_marks_the_reply_interrupted(
    app_env, servers, session_cookie, fake_upstream
):
    conversation, stored = await _start_and_kill(app_env, servers, session_cookie, fake_upstream)

    async def orphaned() -> bool:
        return await db(_seconds_since_touched)(stored.id) > ORPHAN_AFTER

    await _poll(orphaned)
    # What scripts/run.sh runs before starting daphne again.
    check = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", "setup_instance"],
        cwd=ROOT,
        env={**Daphne(app_env).env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert "Marked 1 unfinished replies as interrupted." in check.stdout

    reply = await db(_reply)()
    assert reply.status == "interrupted"
    assert reply.content == stored.content  # the text it had flushed, kept as it was
    assert reply.error

    second = Daphne(app_env).start()
    servers.append(second)
    page = await asyncio.to_thread(
        httpx.get,
        f"{second.http_url}/c/{conversation}/",
        cookies={"sessionid": session_cookie},
        timeout=30,
    )
    assert page.status_code == 200
    assert f'data-message-id="{reply.id}"' in page.text
    assert 'data-status="interrupted"' in page.text
    assert "The reply was interrupted" in page.text
    assert "tok0 tok1 " in page.text
    socket = await connect(second, session_cookie)
    try:
        await socket.send(json.dumps({"type": "subscribe", "conversation": conversation}))
        subscribed = json.loads(await socket.recv())
    finally:
        await socket.close()
    assert subscribed == {"type": "subscribed", "conversation": conversation, "streaming": False}


async def test_after_a_kill_the_sweep_of_a_running_process_tells_open_pages(
    app_env, servers, session_cookie, fake_upstream
):
    conversation, stored = await _start_and_kill(app_env, servers, session_cookie, fake_upstream)

    # Started again at once: the reply is not old enough for the start-up check yet, so it is
    # the periodic sweep that finds it, while a page shows it.
    second = Daphne(app_env).start()
    servers.append(second)
    socket = await connect(second, session_cookie)
    try:
        follower = ReplyFollower(socket, conversation)
        await follower.subscribe()
        done = await follower.until_done(timeout=60)
    finally:
        await socket.close()

    snapshot = next(f for f in follower.frames if f["type"] == "reply.snapshot")
    assert snapshot["content"] == stored.content  # the page first sees the stored text ...
    assert done["status"] == "interrupted"  # ... then learns that it will not go on
    assert "The reply was interrupted" in done["html"]
    reply = await db(_reply)()
    assert (reply.status, reply.content) == ("interrupted", stored.content)
