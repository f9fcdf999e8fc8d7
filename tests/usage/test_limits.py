"""Budgets and rate limits, at the service level against the real database: a send over a limit
is refused with the limit, its size and its reset, and nothing is stored or planned."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from conversations import services
from conversations.errors import ChatError
from conversations.models import Conversation, Message
from providers.events import TextDelta, Usage
from teams.models import Membership, UserLimits
from tests.factories import make_chat_model, make_conversation, make_team, make_user
from usage.limits import LimitReached
from usage.meter import CallMeter
from usage.models import UsageRecord, UsageReservation

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat_model():
    model = make_chat_model("http://127.0.0.1:9/v1", max_output_tokens=500)
    model.input_price_per_mtok = Decimal("2.00")
    model.output_price_per_mtok = Decimal("8.00")
    model.save()
    return model


@pytest.fixture
def alice():
    return make_user("alice")


def _finish(outcome, *, prompt=1000, completion=500, status="complete"):
    """Play the reply's call to its end as the generation does, with reported usage."""
    meter = CallMeter(outcome.plan.usage)
    meter.observe(TextDelta("ok"))
    meter.observe(Usage(prompt, completion, prompt + completion))
    services.reply_finish(
        reply_id=outcome.reply.id,
        content="ok",
        reasoning="",
        status=status,
        call=meter.result(outcome=status, completion_text="ok"),
    )


def _nothing_stored_for(conversation: Conversation, before: int) -> None:
    assert Message.objects.filter(conversation=conversation).count() == before


def test_a_user_over_their_daily_token_budget_is_told_which_limit_its_size_and_reset(
    alice, chat_model
):
    UserLimits.objects.create(user=alice, tokens_per_day=1_500)
    conversation = make_conversation(alice, model=chat_model)
    _finish(services.message_send(user=alice, conversation_id=conversation.id, content="one"))

    with pytest.raises(LimitReached) as caught:
        services.message_send(user=alice, conversation_id=conversation.id, content="two")

    error = caught.value
    assert error.code == "limit_reached"
    assert error.scope == "user" and error.limit == "tokens_per_day"
    assert "daily token limit" in error.message
    assert "1,500 tokens per day" in error.message
    assert "resets at midnight" in error.message
    assert "still in the box" in error.message
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    assert error.resets_at == midnight + timedelta(days=1)
    _nothing_stored_for(conversation, 2)
    assert UsageReservation.objects.count() == 0


def test_a_team_over_its_monthly_cost_budget_refuses_its_members(alice, chat_model):
    bob = make_user("bob")
    team = make_team("Research", admins=(bob,), members=(alice,), cost_per_month=Decimal("0.01"))
    # 1000 prompt tokens at $2/M + 500 completion at $8/M = $0.006 per call.
    first = services.message_send(user=bob, conversation_id=None, content="hi")
    _finish(first)
    second = services.message_send(user=alice, conversation_id=None, content="hi")
    _finish(second)
    assert UsageRecord.objects.filter(team=team).count() == 2

    with pytest.raises(LimitReached) as caught:
        services.message_send(user=alice, conversation_id=None, content="third")
    assert caught.value.scope == "team"
    assert "The team “Research” has reached its monthly cost limit ($0.01 per month)" in (
        caught.value.message
    )
    assert "It resets on 1 " in caught.value.message
    assert Conversation.objects.count() == 2


def test_a_team_admin_cap_on_one_member_leaves_the_others_alone(alice, chat_model):
    bob = make_user("bob")
    team = make_team("Research", admins=(bob,), members=(alice,))
    Membership.objects.filter(team=team, user=alice).update(tokens_per_day=1000)
    _finish(services.message_send(user=alice, conversation_id=None, content="hi"))

    with pytest.raises(LimitReached) as caught:
        services.message_send(user=alice, conversation_id=None, content="again")
    assert caught.value.scope == "membership"
    assert "in the team “Research”" in caught.value.message
    # Bob, in the same team, is not capped.
    assert services.message_send(user=bob, conversation_id=None, content="hi").plan is not None


def test_requests_per_minute_are_counted_including_replies_in_flight(alice, chat_model, settings):
    settings.USAGE_DEFAULT_USER_LIMITS = {**settings.USAGE_DEFAULT_USER_LIMITS}
    settings.USAGE_DEFAULT_USER_LIMITS["requests_per_minute"] = 2
    finished = services.message_send(user=alice, conversation_id=None, content="one")
    _finish(finished)
    services.message_send(user=alice, conversation_id=None, content="two")  # still in flight

    with pytest.raises(LimitReached) as caught:
        services.message_send(user=alice, conversation_id=None, content="three")
    assert caught.value.code == "rate_limited"
    assert "rate limit (2 requests per minute)" in caught.value.message
    assert "You can send again in" in caught.value.message
    assert Conversation.objects.count() == 2

    # A minute later the window has moved on.
    UsageRecord.objects.update(started_at=timezone.now() - timedelta(minutes=2))
    UsageReservation.objects.update(created_at=timezone.now() - timedelta(minutes=2))
    assert services.message_send(user=alice, conversation_id=None, content="four").plan


def test_a_users_own_limit_overrides_the_site_default_and_zero_means_none(
    alice, chat_model, settings
):
    settings.USAGE_DEFAULT_USER_LIMITS = {**settings.USAGE_DEFAULT_USER_LIMITS}
    settings.USAGE_DEFAULT_USER_LIMITS["tokens_per_day"] = 100
    # Nothing is in flight for the first send; its reservation then uses the default up.
    assert services.message_send(user=alice, conversation_id=None, content="one").plan
    with pytest.raises(LimitReached) as caught:
        services.message_send(user=alice, conversation_id=None, content="two")
    assert "100 tokens per day" in caught.value.message
    UserLimits.objects.filter(user=alice).update(tokens_per_day=0)
    assert services.message_send(user=alice, conversation_id=None, content="three").plan


def test_reservations_are_released_when_the_reply_is_recorded(alice, chat_model):
    outcome = services.message_send(user=alice, conversation_id=None, content="hi")
    reservation = UsageReservation.objects.get()
    # The most the reply can cost: its prompt estimate plus max_tokens, at the model's prices.
    assert reservation.tokens == outcome.plan.usage.estimated_prompt_tokens + 500
    assert reservation.cost > 0
    _finish(outcome)
    assert not UsageReservation.objects.exists()


def test_limit_errors_are_chat_errors_so_every_client_shows_them(alice, chat_model):
    UserLimits.objects.create(user=alice, requests_per_minute=1)
    services.message_send(user=alice, conversation_id=None, content="one")
    with pytest.raises(ChatError):
        services.message_send(user=alice, conversation_id=None, content="two")


@pytest.mark.django_db(transaction=True)
def test_many_sends_at_once_cannot_overshoot_a_budget_by_more_than_one_reply(alice, chat_model):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    UserLimits.objects.create(user=alice, tokens_per_day=1_500, requests_per_minute=0)
    conversations = [make_conversation(alice, model=chat_model) for _ in range(10)]
    barrier = threading.Barrier(len(conversations))
    admitted: list[int] = []
    refused: list[str] = []
    lock = threading.Lock()

    def send(conversation: Conversation) -> None:
        try:
            barrier.wait(timeout=30)
            outcome = services.message_send(
                user=alice, conversation_id=conversation.id, content="at once"
            )
            with lock:
                admitted.append(outcome.reply.id)
        except LimitReached as exc:
            with lock:
                refused.append(exc.limit)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(c,)) for c in conversations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    reservations = list(UsageReservation.objects.values_list("tokens", flat=True))
    assert len(admitted) + len(refused) == 10
    assert set(refused) == {"tokens_per_day"}
    assert len(reservations) == len(admitted)
    one_reply = max(reservations)
    # Every send saw the ones before it: admitted while budget was left, never beyond.
    assert sum(reservations) - one_reply < 1_500 <= sum(reservations)
    assert len(admitted) == 3  # 0, ~520, ~1040 tokens in flight were under 1,500
    assert Message.objects.filter(role="user").count() == len(admitted)
