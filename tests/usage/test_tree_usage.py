"""Issue 9's reply paths under issue 7's accounting, over the real websocket stack against the
fake upstream: regenerate and edit are admitted by the same limits as a send, and the title
call after the first exchange is metered as a usage record of its own."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async

from conversations.models import Message
from conversations.titles import is_title_request
from teams.models import UserLimits
from tests.conversations.wsclient import open_socket, receive_until, settle
from tests.factories import make_chat_model, make_team, make_user
from tests.fake_upstream import Script
from usage.models import UsageRecord, UsageReservation

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async


@pytest.fixture
async def chat_model(fake_upstream):
    return await db(make_chat_model)(fake_upstream.base_url)


@pytest.fixture
async def alice():
    return await db(make_user)("alice")


def _records() -> list[tuple[str, str, str, int | None]]:
    return [
        (r.kind, r.call_id, r.outcome, r.team_id)
        for r in UsageRecord.objects.order_by("id").only("kind", "call_id", "outcome", "team_id")
    ]


def _message_count(conversation_id) -> int:
    return Message.objects.filter(conversation_id=conversation_id).count()


async def _send(communicator, content: str, conversation: str | None = None) -> list[dict]:
    await communicator.send_json_to(
        {
            "type": "send",
            "conversation": conversation,
            "content": content,
            "client_id": str(uuid.uuid4()),
        }
    )
    return await receive_until(communicator, "reply.done")


@pytest.mark.parametrize("action", ["regenerate", "edit", "continue"])
async def test_a_reply_action_over_a_budget_is_refused_with_the_limit_and_nothing_is_sent(
    alice, chat_model, fake_upstream, action
):
    # The first reply is cut by the length limit so that "continue" applies to it too.
    fake_upstream.enqueue(Script.stream(["Paris is"], finish_reason="length"))
    communicator, _ = await open_socket(alice)
    frames = await _send(communicator, "Capital of France?")
    conversation_id = frames[0]["conversation"]
    user_message, reply = frames[1]["message"], frames[2]["message"]
    await settle()
    # The reply's 10 + 2 reported tokens already spend this budget.
    await db(UserLimits.objects.update_or_create)(user=alice, defaults={"tokens_per_day": 5})

    target = user_message if action == "edit" else reply
    await communicator.send_json_to(
        {
            "type": action,
            "conversation": conversation_id,
            "message": target,
            "content": "Capital of Italy?",
            "client_id": str(uuid.uuid4()),
        }
    )
    answer = await receive_until(communicator, "error")
    await communicator.disconnect()
    await settle()

    assert answer[-1]["code"] == "limit_reached"
    assert "daily token limit" in answer[-1]["message"]
    assert "5 tokens per day" in answer[-1]["message"]
    assert len(fake_upstream.requests) == 1  # nothing sent upstream
    assert await db(_message_count)(conversation_id) == 2  # nothing stored
    assert [kind for kind, *_ in await db(_records)()] == ["reply"]
    assert await db(UsageReservation.objects.count)() == 0


async def test_a_regenerate_is_metered_once_and_charged_to_the_team_picked(
    alice, chat_model, fake_upstream
):
    await db(make_team)("Research", members=(alice,))
    platform = await db(make_team)("Platform", members=(alice,))
    fake_upstream.enqueue(Script.stream(["Paris"]), Script.stream(["Paris, again"]))
    communicator, _ = await open_socket(alice)
    frames = await _send(communicator, "Capital of France?")
    conversation_id, reply = frames[0]["conversation"], frames[-1]["message"]
    await communicator.send_json_to(
        {
            "type": "regenerate",
            "conversation": conversation_id,
            "message": reply,
            "team": platform.pk,
            "client_id": str(uuid.uuid4()),
        }
    )
    await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()

    records = await db(_records)()
    assert [(kind, outcome) for kind, _, outcome, _ in records] == [
        ("reply", "complete"),
        ("reply", "complete"),
    ]
    assert len({call_id for _, call_id, _, _ in records}) == 2
    assert records[1][3] == platform.pk


async def test_the_title_call_writes_exactly_one_usage_record(
    alice, chat_model, fake_upstream, settings
):
    settings.CHAT_GENERATED_TITLES = True
    team = await db(make_team)("Research", members=(alice,))
    fake_upstream.enqueue(
        Script.stream(["Use ", "reversed()."]),
        Script.stream(["Reversing Lists"], usage=None),
    )
    communicator, _ = await open_socket(alice)
    frames = await _send(communicator, "How do I reverse a list in Python?")
    await receive_until(communicator, "title")
    await communicator.disconnect()
    await settle()

    assert is_title_request(fake_upstream.requests[-1].json)
    records = await db(_records)()
    assert [(kind, outcome, team_id) for kind, _, outcome, team_id in records] == [
        ("reply", "complete", team.pk),
        ("title", "complete", team.pk),
    ]
    title = await db(UsageRecord.objects.get)(kind="title")
    assert title.call_id == f"title:{frames[-1]['message']}"
    assert str(title.conversation_id) == frames[0]["conversation"]
    assert title.user_id == alice.pk
    # No usage reported for the title call: estimated from its text, and marked so.
    assert title.tokens_estimated and title.prompt_tokens > 0 and title.completion_tokens > 0
