"""A daphne process killed in the middle of a reply: the orphan sweep records the call once."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test import Client

from conversations.models import Message
from conversations.sweeper import sweep_orphans
from tests.factories import make_chat_model, make_user
from tests.fake_upstream import Script
from tests.livestack import Daphne, ReplyFollower, connect
from usage.models import UsageRecord, UsageReservation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

db = database_sync_to_async


def _database_url() -> str:
    db_settings = connection.settings_dict
    if db_settings["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the crash test needs PostgreSQL (set DATABASE_URL)")
    host = db_settings["HOST"] or "127.0.0.1"
    return f"postgres://{db_settings['USER']}@{host}:{db_settings['PORT'] or 5432}/{db_settings['NAME']}"


def _cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def test_a_killed_process_leaves_one_interrupted_record_after_the_sweep(
    fake_upstream, tmp_path, settings
):
    server = Daphne(
        {
            "DATABASE_URL": _database_url(),
            "DATABASE_POOL": "0",
            "SECRET_KEY": settings.SECRET_KEY,
            "VAR_DIR": str(tmp_path),
            "DEBUG": "true",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
        }
    ).start()
    try:
        alice = await db(make_user)("alice")
        await db(make_chat_model)(fake_upstream.base_url)
        fake_upstream.enqueue(Script.tokens(n=3000, delay=0.02))
        socket = await connect(server, await db(_cookie)(alice))
        await socket.send(
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
            frame = json.loads(await socket.recv())
            if frame["type"] == "conversation":
                conversation = frame["conversation"]
        follower = ReplyFollower(socket, conversation)
        await follower.until(lambda f: len(f.content) > 0)

        def flushed() -> bool:
            return Message.objects.filter(role="assistant").exclude(content="").exists()

        for _ in range(100):  # the reply's text reaches the database about once a second
            if await db(flushed)():
                break
            await asyncio.sleep(0.1)
        server.kill()  # SIGKILL: no final write, no record, the reservation left behind
    finally:
        server.stop()

    assert await db(UsageReservation.objects.count)() == 1
    assert await db(UsageRecord.objects.count)() == 0
    settings.CHAT_ORPHAN_AFTER = timedelta(seconds=1)
    swept: list[dict] = []
    for _ in range(100):
        swept = await db(sweep_orphans)()
        if swept:
            break
        await asyncio.sleep(0.1)
    assert len(swept) == 1
    assert await db(sweep_orphans)() == []

    reply = await db(Message.objects.get)(role="assistant")
    record = await db(UsageRecord.objects.get)()
    assert reply.status == "interrupted" and reply.content.startswith("tok0 ")
    assert record.call_id == f"reply:{reply.id}"
    assert (record.outcome, record.username) == ("interrupted", "alice")
    assert record.tokens_estimated and record.completion_tokens > 0
    assert await db(UsageReservation.objects.count)() == 0
