"""Per-user limits on sending, and the same message sent twice: refused with a clear message,
nothing stored half-way, and holding when sends race (each thread has its own connection, as
two daphne processes would)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from conversations import services
from conversations.errors import ChatError
from conversations.models import Conversation, Message
from tests.factories import make_chat_model, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def chat_model():
    return make_chat_model("http://127.0.0.1:9/v1")


@pytest.fixture
def alice():
    return make_user("alice")


def _send(user, content="hello", conversation_id=None, client_id=None):
    return services.message_send(
        user=user, conversation_id=conversation_id, content=content, client_id=client_id
    )


def _finish(outcome) -> None:
    services.reply_finish(
        reply_id=outcome.reply.id, content="done", reasoning="", status=Message.Status.COMPLETE
    )


def _race(count: int, send: Callable[[], object]) -> list[object]:
    """Run send() in count threads released at the same moment; their results or errors."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = send()
        except Exception as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_replies_over_the_limit_are_refused_and_nothing_is_stored(
    alice, chat_model, settings
):
    settings.CHAT_MAX_CONCURRENT_REPLIES = 2
    first = _send(alice, "one")
    _send(alice, "two")
    messages_before = Message.objects.count()

    with pytest.raises(ChatError) as new_chat:
        _send(alice, "three")
    # An existing conversation whose reply has finished is refused the same way.
    _finish(first)
    _send(alice, "four")
    with pytest.raises(ChatError) as follow_up:
        _send(alice, "five", conversation_id=first.conversation.id)

    for caught in (new_chat, follow_up):
        assert caught.value.code == "too_many_replies"
        assert "2 replies being written" in caught.value.message
        assert "still in the box" in caught.value.message
    assert Message.objects.count() == messages_before + 2  # "four" and its reply only
    assert Conversation.objects.count() == 3
    assert not Message.objects.filter(content__in=["three", "five"]).exists()


def test_a_busy_conversation_says_busy_even_at_the_limit(alice, chat_model, settings):
    settings.CHAT_MAX_CONCURRENT_REPLIES = 1
    first = _send(alice, "one")
    with pytest.raises(ChatError) as caught:
        _send(alice, "again", conversation_id=first.conversation.id)
    assert caught.value.code == "busy"


def test_the_concurrency_limit_holds_when_sends_race(alice, chat_model, settings):
    settings.CHAT_MAX_CONCURRENT_REPLIES = 2
    results = _race(6, lambda: _send(alice, "racing"))

    sent = [r for r in results if isinstance(r, services.SendOutcome)]
    refused = [r for r in results if isinstance(r, ChatError)]
    assert len(sent) == 2, results
    assert len(refused) == 4 and {r.code for r in refused} == {"too_many_replies"}
    assert Message.objects.filter(status=Message.Status.STREAMING).count() == 2
    assert Conversation.objects.count() == 2


def test_other_users_do_not_count_against_the_limit(alice, chat_model, settings):
    settings.CHAT_MAX_CONCURRENT_REPLIES = 1
    _send(alice, "mine")
    bob = make_user("bob")
    assert _send(bob, "his").plan is not None


def _rate(settings, per_minute: int) -> None:
    # The request rate is the usage app's (LIMIT_USER_REQUESTS_PER_MINUTE), one mechanism for
    # every reply path.
    settings.USAGE_DEFAULT_USER_LIMITS = {
        **settings.USAGE_DEFAULT_USER_LIMITS,
        "requests_per_minute": per_minute,
    }


def test_the_send_rate_says_when_to_try_again_and_stores_nothing(alice, chat_model, settings):
    from usage.models import UsageRecord, UsageReservation

    _rate(settings, 3)
    sent = []
    for index in range(3):
        outcome = _send(alice, f"message {index}")
        _finish(outcome)
        sent.append(outcome)
    before = Message.objects.count()

    with pytest.raises(ChatError) as caught:
        _send(alice, "one too many", conversation_id=sent[0].conversation.id)
    assert caught.value.code == "rate_limited"
    assert "3 requests per minute" in caught.value.message
    assert "You can send again in" in caught.value.message
    assert "still in the box" in caught.value.message
    assert Message.objects.count() == before

    # Once the requests leave the window, there is room again.
    past = timezone.now() - timedelta(seconds=61)
    UsageReservation.objects.update(created_at=past)
    UsageRecord.objects.update(started_at=past)
    assert _send(alice, "now it fits", conversation_id=sent[0].conversation.id).plan is not None


def test_the_send_rate_holds_when_sends_race(alice, chat_model, settings):
    _rate(settings, 3)
    settings.CHAT_MAX_CONCURRENT_REPLIES = 0
    results = _race(6, lambda: _send(alice, "racing"))
    assert sum(isinstance(r, services.SendOutcome) for r in results) == 3, results
    assert {r.code for r in results if isinstance(r, ChatError)} == {"rate_limited"}
    assert Message.objects.filter(role=Message.Role.USER).count() == 3


def test_limits_of_zero_are_off(alice, chat_model, settings):
    settings.CHAT_MAX_CONCURRENT_REPLIES = 0
    _rate(settings, 0)
    for index in range(25):
        _send(alice, f"message {index}")
    assert Message.objects.filter(status=Message.Status.STREAMING).count() == 25


@pytest.mark.parametrize("action", ["edit", "regenerate", "continue"])
def test_every_reply_path_counts_against_the_concurrency_limit(alice, chat_model, settings, action):
    settings.CHAT_MAX_CONCURRENT_REPLIES = 1
    first = _send(alice, "one")
    _finish(first)
    if action == "continue":
        Message.objects.filter(id=first.reply.id).update(finish_reason="length")
    _send(alice, "streaming elsewhere")  # a second conversation, its reply still streaming
    before = Message.objects.count()
    common = {"user": alice, "conversation_id": first.conversation.id}
    client_id = uuid.uuid4()

    def start():
        if action == "edit":
            return services.message_edit(
                **common, message_id=first.user_message.id, content="edited", client_id=client_id
            )
        if action == "regenerate":
            return services.message_regenerate(
                **common, message_id=first.reply.id, client_id=client_id
            )
        return services.message_continue(**common, message_id=first.reply.id, client_id=client_id)

    with pytest.raises(ChatError) as caught:
        start()
    assert caught.value.code == "too_many_replies"
    assert Message.objects.count() == before

    # Room again: it starts; sent again (a page that lost the answer), it is answered with the
    # stored reply, never refused, although the limit is reached now.
    Message.objects.filter(status=Message.Status.STREAMING).update(status=Message.Status.COMPLETE)
    started = start()
    assert started.plan is not None
    again = start()
    assert again.plan is None
    assert again.conversation.id == first.conversation.id
    assert Message.objects.filter(status=Message.Status.STREAMING).count() == 1


def test_a_resent_first_message_does_not_start_a_second_conversation(alice, chat_model):
    client_id = uuid.uuid4()
    first = _send(alice, "new chat", client_id=client_id)
    again = _send(alice, "new chat", client_id=client_id)
    assert again.plan is None and not again.created_conversation
    assert again.conversation.id == first.conversation.id
    assert (again.user_message.id, again.reply.id) == (first.user_message.id, first.reply.id)
    assert Conversation.objects.count() == 1 and Message.objects.count() == 2


@pytest.mark.parametrize("in_conversation", [False, True])
def test_the_same_message_sent_twice_at_once_is_stored_once(alice, chat_model, in_conversation):
    conversation_id = None
    if in_conversation:
        earlier = _send(alice, "earlier")
        _finish(earlier)
        conversation_id = earlier.conversation.id
    client_id = uuid.uuid4()
    results = _race(4, lambda: _send(alice, "twice", conversation_id, client_id))

    assert all(isinstance(r, services.SendOutcome) for r in results), results
    assert sum(r.plan is not None for r in results) == 1  # answered once
    assert len({r.user_message.id for r in results}) == 1
    assert Message.objects.filter(content="twice").count() == 1
    assert Conversation.objects.count() == 1


async def test_the_page_is_told_why_and_keeps_its_draft(alice, chat_model, settings):
    from channels.db import database_sync_to_async

    from tests.conversations.wsclient import open_socket

    settings.CHAT_MAX_CONCURRENT_REPLIES = 1
    await database_sync_to_async(_send)(alice, "still streaming")
    before = await database_sync_to_async(Message.objects.count)()
    communicator, _ = await open_socket(alice)
    client_id = str(uuid.uuid4())
    await communicator.send_json_to(
        {"type": "send", "conversation": None, "content": "one more", "client_id": client_id}
    )
    answer = await communicator.receive_json_from()
    await communicator.disconnect()

    assert answer["type"] == "error" and answer["code"] == "too_many_replies"
    assert answer["client_id"] == client_id  # the page keeps this draft in the box
    assert "1 reply being written" in answer["message"]
    assert await database_sync_to_async(Message.objects.count)() == before
