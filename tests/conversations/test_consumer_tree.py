"""Regenerate, edit, continue, branch switching and generated titles over the real websocket
stack, against the fake upstream: what the model is sent is read from its recorded requests."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async
from django.dispatch import receiver

from conversations.history import CONTINUE_INSTRUCTION
from conversations.models import Conversation, Message
from conversations.titles import TITLE_INSTRUCTION, is_title_request
from conversations.usage import UpstreamCall, upstream_call_recorded
from tests.conversations.wsclient import open_socket, receive_until, settle, streamed_text
from tests.factories import make_chat_model, make_user
from tests.fake_upstream import Script

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async


@pytest.fixture
async def chat_model(fake_upstream):
    return await db(make_chat_model)(fake_upstream.base_url)


@pytest.fixture
async def alice():
    return await db(make_user)("alice")


def _messages(conversation_id) -> list[Message]:
    return list(Message.objects.filter(conversation_id=conversation_id).order_by("id"))


def _conversation(conversation_id) -> Conversation:
    return Conversation.objects.get(id=conversation_id)


def _sent(request) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request.json["messages"]]


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


async def _act(communicator, frame: dict, until: str = "reply.done") -> list[dict]:
    await communicator.send_json_to({"client_id": str(uuid.uuid4()), **frame})
    return await receive_until(communicator, until)


async def _two_turns(communicator, fake_upstream) -> tuple[str, list[Message]]:
    fake_upstream.enqueue(Script.stream(["Paris"]), Script.stream(["Berlin"]))
    frames = await _send(communicator, "Capital of France?")
    conversation_id = frames[0]["conversation"]
    await _send(communicator, "And of Germany?", conversation_id)
    return conversation_id, await db(_messages)(conversation_id)


async def test_regenerate_streams_a_new_version_and_sends_the_path_without_the_old_reply(
    alice, chat_model, fake_upstream
):
    communicator, _ = await open_socket(alice)
    conversation_id, (_, _, q2, a2) = await _two_turns(communicator, fake_upstream)
    fake_upstream.enqueue(Script.stream(["Ber", "lin, ", "of course"], delay=0.01))

    frames = await _act(
        communicator, {"type": "regenerate", "conversation": conversation_id, "message": a2.id}
    )
    await communicator.disconnect()
    await settle()

    assert frames[0]["type"] == "thread" and frames[0]["fresh"] is True
    assert "2 / 2" in frames[0]["html"] and "Version 2 of 2" in frames[0]["html"]
    assert streamed_text(frames) == "Berlin, of course"
    assert _sent(fake_upstream.requests[-1]) == [
        ("user", "Capital of France?"),
        ("assistant", "Paris"),
        ("user", "And of Germany?"),
    ]
    stored = await db(_messages)(conversation_id)
    assert [m.content for m in stored] == [
        "Capital of France?",
        "Paris",
        "And of Germany?",
        "Berlin",
        "Berlin, of course",
    ]
    assert stored[-1].parent_id == q2.id
    assert (await db(_conversation)(conversation_id)).current_leaf_id == stored[-1].id


async def test_edit_sends_the_new_text_after_the_history_before_it_and_switch_goes_back(
    alice, chat_model, fake_upstream
):
    communicator, _ = await open_socket(alice)
    conversation_id, (_, _, q2, a2) = await _two_turns(communicator, fake_upstream)
    fake_upstream.enqueue(Script.stream(["Rome"]))

    frames = await _act(
        communicator,
        {
            "type": "edit",
            "conversation": conversation_id,
            "message": q2.id,
            "content": "And of Italy?",
        },
    )
    assert frames[0]["type"] == "thread"
    assert "And of Italy?" in frames[0]["html"] and "And of Germany?" not in frames[0]["html"]
    assert _sent(fake_upstream.requests[-1]) == [
        ("user", "Capital of France?"),
        ("assistant", "Paris"),
        ("user", "And of Italy?"),
    ]

    # Back to the first version: the old question and its answer are shown again.
    switched = await _act(
        communicator,
        {"type": "switch", "conversation": conversation_id, "message": q2.id},
        until="thread",
    )
    html = switched[-1]["html"]
    assert "And of Germany?" in html and "Berlin" in html and "And of Italy?" not in html
    assert switched[-1]["fresh"] is False
    assert (await db(_conversation)(conversation_id)).current_leaf_id == a2.id

    # The next question follows the branch shown.
    fake_upstream.enqueue(Script.stream(["Madrid"]))
    await _send(communicator, "And of Spain?", conversation_id)
    await communicator.disconnect()
    await settle()
    assert _sent(fake_upstream.requests[-1]) == [
        ("user", "Capital of France?"),
        ("assistant", "Paris"),
        ("user", "And of Germany?"),
        ("assistant", "Berlin"),
        ("user", "And of Spain?"),
    ]
    assert len(await db(_messages)(conversation_id)) == 8


async def test_continue_sends_the_cut_reply_and_streams_the_rest_into_a_new_reply(
    alice, chat_model, fake_upstream
):
    fake_upstream.enqueue(
        Script.stream(["The first half"], finish_reason="length"),
        Script.stream([" and the second half."]),
    )
    communicator, _ = await open_socket(alice)
    frames = await _send(communicator, "Write an essay")
    conversation_id = frames[0]["conversation"]
    assert frames[-1]["finish_reason"] == "length"
    assert "Continue" in frames[-1]["html"]
    cut = frames[-1]["message"]

    frames = await _act(
        communicator, {"type": "continue", "conversation": conversation_id, "message": cut}
    )
    await communicator.disconnect()
    await settle()

    assert streamed_text(frames) == " and the second half."
    assert _sent(fake_upstream.requests[-1]) == [
        ("user", "Write an essay"),
        ("assistant", "The first half"),
        ("user", CONTINUE_INSTRUCTION),
    ]
    stored = await db(_messages)(conversation_id)
    assert [(m.role, m.content, m.parent_id) for m in stored[1:]] == [
        ("assistant", "The first half", stored[0].id),
        ("assistant", " and the second half.", stored[1].id),
    ]
    assert "message--continuation" in frames[-1]["html"]


async def test_a_refused_tree_action_is_a_clear_error_and_changes_nothing(
    alice, chat_model, fake_upstream
):
    bob = await db(make_user)("bob")
    communicator, _ = await open_socket(alice)
    frames = await _send(communicator, "Mine")
    conversation_id = frames[0]["conversation"]
    reply = frames[-1]["message"]
    await communicator.disconnect()

    intruder, _ = await open_socket(bob)
    answers = []
    for kind in ("regenerate", "continue", "switch", "edit"):
        answers += await _act(
            intruder,
            {"type": kind, "conversation": conversation_id, "message": reply, "content": "x"},
            until="error",
        )
    await intruder.disconnect()

    mine, _ = await open_socket(alice)
    answers += await _act(
        mine,
        {"type": "continue", "conversation": conversation_id, "message": reply},
        until="error",
    )
    await mine.disconnect()
    await settle()
    assert [a["code"] for a in answers] == ["not_found"] * 4 + ["not_continuable"]
    assert len(await db(_messages)(conversation_id)) == 2
    assert len(fake_upstream.requests) == 1


async def test_after_the_first_exchange_the_model_writes_the_title_and_its_usage_is_kept(
    alice, chat_model, fake_upstream, settings
):
    settings.CHAT_GENERATED_TITLES = True
    calls: list[UpstreamCall] = []

    @receiver(upstream_call_recorded, weak=False)
    def keep(sender, call: UpstreamCall, **kwargs):
        calls.append(call)

    fake_upstream.enqueue(
        Script.stream(["Use ", "a ", "list ", "comprehension."]),
        Script.stream(['"', "Reversing ", "Lists ", "in Python", '"'], usage=None),
    )
    try:
        communicator, _ = await open_socket(alice)
        frames = await _send(communicator, "How do I reverse a list in Python without copying?")
        title = await receive_until(communicator, "title")
        await communicator.disconnect()
        await settle()
    finally:
        upstream_call_recorded.disconnect(keep)

    conversation_id = frames[0]["conversation"]
    assert frames[0]["title"] == "How do I reverse a list in Python…"  # first words at once
    assert title[-1] == {
        "type": "title",
        "conversation": conversation_id,
        "title": "Reversing Lists in Python",
    }
    request = fake_upstream.requests[-1]
    assert is_title_request(request.json)
    assert request.json["messages"][0]["content"] == TITLE_INSTRUCTION
    assert "How do I reverse a list" in request.json["messages"][1]["content"]
    assert "Use a list comprehension." in request.json["messages"][1]["content"]
    assert request.json["max_tokens"] <= 64

    conversation = await db(_conversation)(conversation_id)
    assert conversation.title == "Reversing Lists in Python"
    assert conversation.title_source == "model"
    # The provider reported no usage for the title call: estimated, and marked as such.
    assert conversation.title_prompt_tokens > 0 and conversation.title_completion_tokens > 0
    assert conversation.title_usage_estimated
    assert [c.purpose for c in calls] == ["reply", "title"]
    assert calls[0].prompt_tokens == 10 and not calls[0].estimated
    assert calls[1].estimated and calls[1].user_id == alice.pk

    # Only after the first exchange.
    fake_upstream.enqueue(Script.stream(["More."]))
    again, _ = await open_socket(alice)
    await _send(again, "And a tuple?", conversation_id)
    await again.disconnect()
    await settle()
    assert not is_title_request(fake_upstream.requests[-1].json)
    assert len(fake_upstream.requests) == 3


async def test_a_title_the_user_set_is_kept_and_a_failed_title_call_keeps_the_first_words(
    alice, chat_model, fake_upstream, settings
):
    settings.CHAT_GENERATED_TITLES = True
    fake_upstream.enqueue(
        Script.stream(["Sure."]),
        Script.error(500, {"error": {"message": "overloaded"}}),
        Script.error(500, {"error": {"message": "overloaded"}}),
        Script.error(500, {"error": {"message": "overloaded"}}),
    )
    communicator, _ = await open_socket(alice)
    frames = await _send(communicator, "Plan the team offsite in March")
    await communicator.disconnect()
    await settle()
    conversation = await db(_conversation)(frames[0]["conversation"])
    assert conversation.title == "Plan the team offsite in March"
    assert conversation.title_source == "words"

    # Renamed by the user before the model's title arrives: the user's title stays.
    def rename(conversation_id):
        from conversations import services

        services.conversation_rename(
            conversation=Conversation.objects.get(id=conversation_id), title="Offsite"
        )

    fake_upstream.enqueue(Script.stream(["Hi."]), Script.stream(["Greetings"], first_delay=0.5))
    communicator, _ = await open_socket(alice)
    frames = await _send(communicator, "Hello there")
    await db(rename)(frames[0]["conversation"])
    await communicator.disconnect()
    await settle()
    conversation = await db(_conversation)(frames[0]["conversation"])
    assert (conversation.title, conversation.title_source) == ("Offsite", "user")
    assert conversation.title_completion_tokens is not None  # the call still counts
