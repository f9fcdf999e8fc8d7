"""Summary calls (conversations/summaries.py) are upstream calls too: one usage record each,
charged to the reply's user and team at the summarizer's prices, including a stopped one."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async

from providers.models import ChatModel
from tests.conversations.test_history import (
    MAX_OUTPUT,
    WINDOW,
    Upstream,
    _stored_history,
    is_summary_call,
)
from tests.conversations.wsclient import open_socket, receive_until, settle
from tests.factories import make_chat_model, make_team, make_user
from tests.fake_upstream import Script
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async


def _models(base_url: str) -> tuple[ChatModel, ChatModel]:
    chat = make_chat_model(
        base_url, context_window=WINDOW, max_output_tokens=MAX_OUTPUT, max_retries=0
    )
    summarizer = make_chat_model(
        base_url, name="summarizer", context_window=4000, max_output_tokens=MAX_OUTPUT
    )
    ChatModel.objects.filter(pk=summarizer.pk).update(
        use_for_summaries=True,
        is_default=False,
        input_price_per_mtok=Decimal("1"),
        output_price_per_mtok=Decimal("2"),
    )
    return chat, summarizer


def _records() -> list[UsageRecord]:
    return list(UsageRecord.objects.order_by("id"))


async def test_each_summary_call_gets_its_own_record_charged_like_the_reply(fake_upstream):
    alice = await db(make_user)("alice")
    team = await db(make_team)("Research", members=(alice,))
    chat, _ = await db(_models)(fake_upstream.base_url)
    conversation = await db(_stored_history)(alice, chat, 30, random.Random(7), team=team)
    upstream = Upstream(random.Random(8))
    fake_upstream.responder = upstream
    communicator, _ = await open_socket(alice)
    await communicator.send_json_to(
        {
            "type": "send",
            "conversation": str(conversation.id),
            "content": "And now?",
            "client_id": str(uuid.uuid4()),
        }
    )
    await receive_until(communicator, "reply.done", timeout=20)
    await communicator.disconnect()
    await settle()

    records = await db(_records)()
    summaries = [r for r in records if r.kind == "summary"]
    replies = [r for r in records if r.kind == "reply"]
    assert len(summaries) == sum(1 for kind, _ in upstream.log if kind == "summary") >= 1
    assert len(replies) == 1
    for record in summaries:
        assert record.model_name == "summarizer" and record.outcome == "complete"
        assert (record.username, record.team_name) == ("alice", "Research")
        assert record.conversation_id == conversation.id
        assert not record.tokens_estimated and record.prompt_tokens > 0
        expected = (record.prompt_tokens * 1 + record.completion_tokens * 2) / Decimal(10**6)
        assert record.cost == expected
    assert replies[0].model_name == "fake-model"


async def test_a_summary_call_cut_by_stop_is_recorded_as_stopped(fake_upstream):
    alice = await db(make_user)("alice")
    chat, _ = await db(_models)(fake_upstream.base_url)
    conversation = await db(_stored_history)(alice, chat, 30, random.Random(9))
    fake_upstream.responder = lambda body: Script.hang() if is_summary_call(body) else None
    communicator, _ = await open_socket(alice)
    await communicator.send_json_to(
        {
            "type": "send",
            "conversation": str(conversation.id),
            "content": "Hello again",
            "client_id": str(uuid.uuid4()),
        }
    )
    await receive_until(communicator, "reply.status", timeout=10)
    assert await asyncio.to_thread(fake_upstream.wait_for_requests, 1, 10)
    await communicator.send_json_to({"type": "stop", "conversation": str(conversation.id)})
    await receive_until(communicator, "reply.done", timeout=10)
    await communicator.disconnect()
    await settle()

    summary, reply = await db(_records)()
    assert (summary.kind, summary.outcome, summary.model_name) == (
        "summary",
        "stopped",
        "summarizer",
    )
    assert (reply.kind, reply.outcome) == ("reply", "stopped")
    # The reply's own request was never sent: it cost nothing.
    assert (reply.prompt_tokens, reply.completion_tokens, reply.cost) == (0, 0, 0)
