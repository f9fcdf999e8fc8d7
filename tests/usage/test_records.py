"""Exactly one usage record per upstream call, across the streaming tests' fault scripts, over
the real websocket stack and the fake upstream on loopback."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, Message
from conversations.sweeper import sweep_orphans
from teams.models import UserLimits
from tests.conversations.wsclient import open_socket, receive_until, settle
from tests.factories import make_chat_model, make_team, make_user
from tests.fake_upstream import Script
from usage.models import DailyModelUsage, DailyTtftHistogram, UsageRecord, UsageReservation

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async


def _priced_model(base_url: str, **fields):
    model = make_chat_model(base_url, **fields)
    model.input_price_per_mtok = Decimal("3.00")
    model.output_price_per_mtok = Decimal("15.00")
    model.save()
    return model


@pytest.fixture
async def chat_model(fake_upstream):
    return await db(_priced_model)(fake_upstream.base_url)


@pytest.fixture
async def alice():
    return await db(make_user)("alice")


async def _send(communicator, content: str, conversation: str | None = None) -> None:
    await communicator.send_json_to(
        {
            "type": "send",
            "conversation": conversation,
            "content": content,
            "client_id": str(uuid.uuid4()),
        }
    )


def _records() -> list[UsageRecord]:
    return list(UsageRecord.objects.order_by("id"))


async def _chat(user, script: Script | None, fake_upstream, *, stop_after_delta: bool = False):
    if script is not None:
        fake_upstream.enqueue(script)
    communicator, _ = await open_socket(user)
    await _send(communicator, "Hello there")
    if stop_after_delta:
        frames = await receive_until(communicator, "reply.delta")
        await communicator.send_json_to({"type": "stop", "conversation": frames[0]["conversation"]})
    frames = await receive_until(communicator, "reply.done", timeout=10)
    await communicator.disconnect()
    await settle()
    return frames


async def test_a_complete_reply_is_recorded_once_with_reported_tokens_cost_and_timing(
    alice, chat_model, fake_upstream
):
    team = await db(make_team)("Research", members=(alice,))
    usage = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}
    await _chat(alice, Script.stream(["Hi", " there"], delay=0.01, usage=usage), fake_upstream)

    [record] = await db(_records)()
    reply = await db(Message.objects.get)(role="assistant")
    assert record.call_id == f"reply:{reply.id}"
    assert (record.kind, record.outcome, record.error_kind) == ("reply", "complete", "")
    assert (record.prompt_tokens, record.completion_tokens) == (1200, 300)
    assert not record.tokens_estimated
    # $3/M prompt and $15/M completion, at the time of the call.
    assert record.cost == Decimal("0.0081")
    assert record.input_price_per_mtok == Decimal("3.00")
    assert record.ttft_ms is not None and record.duration_ms >= record.ttft_ms
    assert record.retries == 0
    assert (record.user_id, record.username) == (alice.id, "alice")
    assert (record.team_id, record.team_name) == (team.id, "Research")
    assert record.model_name == "fake-model" and record.provider_name.startswith("Fake upstream")
    assert not await db(UsageReservation.objects.exists)()
    day = await db(DailyModelUsage.objects.get)()
    assert (day.calls, day.prompt_tokens, day.completion_tokens) == (1, 1200, 300)
    assert await db(DailyTtftHistogram.objects.count)() == 1


async def test_a_stopped_reply_is_recorded_once_with_estimated_tokens(
    alice, chat_model, fake_upstream
):
    frames = await _chat(
        alice, Script.tokens(n=2000, delay=0.02), fake_upstream, stop_after_delta=True
    )
    assert frames[-1]["status"] == "stopped"
    [record] = await db(_records)()
    assert record.outcome == "stopped"
    assert record.tokens_estimated
    assert record.prompt_tokens > 0 and record.completion_tokens > 0
    assert record.cost > 0


async def test_an_upstream_error_is_recorded_once_with_its_kind_and_no_tokens(
    alice, chat_model, fake_upstream
):
    body = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
    await _chat(alice, Script.error(401, body), fake_upstream)
    [record] = await db(_records)()
    assert (record.outcome, record.error_kind) == ("error", "auth")
    assert (record.prompt_tokens, record.completion_tokens, record.cost) == (0, 0, 0)
    assert record.ttft_ms is None


async def test_retries_before_the_first_token_are_counted_in_the_one_record(
    alice, chat_model, fake_upstream
):
    fake_upstream.enqueue(
        Script.error(503, {"error": {"message": "overloaded"}}, headers={"Retry-After": "0"}),
        Script.error(503, {"error": {"message": "overloaded"}}, headers={"Retry-After": "0"}),
    )
    await _chat(alice, Script.stream(["ok"]), fake_upstream)
    assert len(fake_upstream.requests) == 3
    [record] = await db(_records)()
    assert (record.outcome, record.retries) == ("complete", 2)


async def test_a_stalled_stream_is_recorded_once_as_interrupted(alice, fake_upstream):
    await db(_priced_model)(fake_upstream.base_url, idle_timeout=0.3)
    frames = await _chat(alice, Script.stream(["partial ", "text"], then="stall"), fake_upstream)
    assert frames[-1]["status"] == "interrupted"
    [record] = await db(_records)()
    assert (record.outcome, record.error_kind) == ("interrupted", "timeout")
    assert record.tokens_estimated and record.completion_tokens > 0


def _crash_and_sweep(user, model) -> tuple[int, list[dict], list[dict]]:
    """A send whose process died before the reply ended: the row stays "streaming"."""
    outcome = services.message_send(user=user, conversation_id=None, content="Hello there")
    services.reply_flush(reply_id=outcome.reply.id, content="half a repl", reasoning="")
    Message.objects.filter(id=outcome.reply.id).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    first = sweep_orphans()
    second = sweep_orphans()  # another process's sweep, or the next round: nothing new
    return outcome.reply.id, first, second


async def test_a_reply_whose_process_died_is_recorded_once_by_the_sweep(alice, chat_model):
    reply_id, first, second = await db(_crash_and_sweep)(alice, chat_model)
    assert [frame["message"] for frame in first] == [reply_id] and second == []
    [record] = await db(_records)()
    assert record.call_id == f"reply:{reply_id}"
    assert (record.outcome, record.error_kind) == ("interrupted", "interrupted")
    assert record.tokens_estimated and record.prompt_tokens > 0 and record.completion_tokens > 0
    assert not await db(UsageReservation.objects.exists)()
    # A late finish from a process that was only slow, not dead, records nothing more.
    await db(services.reply_finish)(
        reply_id=reply_id, content="x", reasoning="", status="complete", call=None
    )
    assert len(await db(_records)()) == 1


def _record_twice(call_id: str, user) -> list[bool]:
    from usage.meter import CallContext, UsageCall
    from usage.services import usage_record_call

    context = CallContext(
        call_id=call_id,
        kind="summary",
        user_id=user.id,
        username=user.username,
        team_id=None,
        team_name="",
        conversation_id=None,
        model_id=None,
        model_name="m",
        provider_id=None,
        provider_name="p",
        input_price_per_mtok=None,
        output_price_per_mtok=None,
    )
    call = UsageCall(
        context=context,
        started_at=timezone.now(),
        duration_ms=5,
        ttft_ms=1,
        prompt_tokens=10,
        completion_tokens=2,
        tokens_estimated=False,
        outcome="complete",
    )
    return [usage_record_call(call=call), usage_record_call(call=call)]


async def test_recording_the_same_call_twice_keeps_one_record_and_one_count(alice):
    assert await db(_record_twice)("summary:abc", alice) == [True, False]
    assert await db(UsageRecord.objects.count)() == 1
    assert (await db(DailyModelUsage.objects.get)()).calls == 1


def _delete_everything(user) -> None:
    Conversation.objects.filter(owner=user).delete()
    user.delete()


async def test_records_stay_without_content_when_the_conversation_and_user_are_deleted(
    alice, chat_model, fake_upstream
):
    await _chat(alice, Script.stream(["secret ", "answer"]), fake_upstream)
    await db(_delete_everything)(alice)
    [record] = await db(_records)()
    assert record.user_id is None and record.conversation_id is None
    assert record.username == "alice" and record.prompt_tokens == 10
    fields = {field.name for field in UsageRecord._meta.get_fields()}
    assert not fields & {"content", "text", "title", "messages"}


async def test_a_send_over_a_limit_is_refused_in_the_conversation_and_nothing_goes_upstream(
    alice, chat_model, fake_upstream
):
    await db(UserLimits.objects.create)(user=alice, tokens_per_day=1)
    await _chat(alice, Script.stream(["ok"]), fake_upstream)  # the first is admitted
    requests_before = len(fake_upstream.requests)

    communicator, _ = await open_socket(alice)
    conversation = await db(lambda: str(Conversation.objects.get().id))()
    client_id = str(uuid.uuid4())
    await communicator.send_json_to(
        {
            "type": "send",
            "conversation": conversation,
            "content": "Please answer this too",
            "client_id": client_id,
        }
    )
    answer = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()
    await settle()

    assert answer["type"] == "error" and answer["code"] == "limit_reached"
    assert answer["client_id"] == client_id and answer["conversation"] == conversation
    assert "daily token limit (1 token per day)" in answer["message"]
    assert "still in the box" in answer["message"]
    assert len(fake_upstream.requests) == requests_before
    contents = await db(lambda: list(Message.objects.values_list("content", flat=True)))()
    assert "Please answer this too" not in contents
    assert len(await db(_records)()) == 1
