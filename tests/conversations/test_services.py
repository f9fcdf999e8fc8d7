"""Services and the history service, against the real database."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations import services
from conversations.errors import ChatError, ConversationNotFound
from conversations.history import ContextTooLarge, build_request_context
from conversations.models import Conversation, Message
from conversations.tokens import count_tokens
from tests.factories import make_chat_model, make_conversation, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat_model():
    return make_chat_model("http://127.0.0.1:9/v1")


@pytest.fixture
def alice():
    return make_user("alice")


def test_first_message_creates_a_titled_conversation(alice, chat_model):
    outcome = services.message_send(
        user=alice,
        conversation_id=None,
        content="How do I reverse a list in Python without copying it?",
    )
    assert outcome.created_conversation
    assert outcome.conversation.title == "How do I reverse a list in Python…"
    assert outcome.user_message.token_count == count_tokens(outcome.user_message.content) + 4
    assert outcome.reply.status == Message.Status.STREAMING
    assert outcome.reply.parent_id == outcome.user_message.id
    assert outcome.plan is not None
    assert outcome.plan.request.messages[-1]["content"].startswith("How do I reverse")
    conversation = Conversation.objects.get(id=outcome.conversation.id)
    assert conversation.current_leaf_id == outcome.reply.id


def test_no_configured_model_is_a_clear_error_and_stores_nothing(alice):
    with pytest.raises(ChatError) as caught:
        services.message_send(user=alice, conversation_id=None, content="hello")
    assert caught.value.code == "no_model"
    assert "OPENAI_BASE_URL" in caught.value.message
    assert not Conversation.objects.exists()


@pytest.mark.parametrize("content", ["", "   \n ", None, 42])
def test_empty_or_non_text_messages_are_refused(alice, chat_model, content):
    with pytest.raises(ChatError):
        services.message_send(user=alice, conversation_id=None, content=content)
    assert not Message.objects.exists()


def test_someone_elses_conversation_is_not_found(alice, chat_model):
    bob = make_user("bob")
    bobs = make_conversation(bob, model=chat_model)
    with pytest.raises(ConversationNotFound):
        services.message_send(user=alice, conversation_id=bobs.id, content="hi")
    assert not Message.objects.filter(conversation=bobs).exists()


def test_a_client_id_seen_before_returns_the_stored_pair(alice, chat_model):
    conversation = make_conversation(alice, model=chat_model)
    client_id = uuid.uuid4()
    first = services.message_send(
        user=alice, conversation_id=conversation.id, content="hi", client_id=client_id
    )
    services.reply_finish(reply_id=first.reply.id, content="hello", reasoning="", status="complete")
    again = services.message_send(
        user=alice, conversation_id=conversation.id, content="hi", client_id=client_id
    )
    assert again.plan is None
    assert (again.user_message.id, again.reply.id) == (first.user_message.id, first.reply.id)
    assert Message.objects.filter(conversation=conversation).count() == 2


def test_only_one_reply_streams_per_conversation(alice, chat_model):
    conversation = make_conversation(alice, model=chat_model)
    services.message_send(user=alice, conversation_id=conversation.id, content="one")
    with pytest.raises(ChatError) as caught:
        services.message_send(user=alice, conversation_id=conversation.id, content="two")
    assert caught.value.code == "busy"
    assert list(Message.objects.filter(role="user").values_list("content", flat=True)) == ["one"]


def test_flush_and_finish_touch_only_a_streaming_reply(alice, chat_model):
    outcome = services.message_send(user=alice, conversation_id=None, content="hi")
    services.reply_flush(reply_id=outcome.reply.id, content="par", reasoning="")
    services.reply_finish(
        reply_id=outcome.reply.id, content="partial", reasoning="", status="stopped"
    )
    # A late flush after the end must not overwrite the final text.
    services.reply_flush(reply_id=outcome.reply.id, content="par", reasoning="")
    reply = Message.objects.get(id=outcome.reply.id)
    assert (reply.content, reply.status) == ("partial", "stopped")
    assert reply.usage_estimated and reply.completion_tokens == reply.token_count


def test_orphaned_replies_are_marked_interrupted_with_their_text(alice, chat_model):
    outcome = services.message_send(user=alice, conversation_id=None, content="hi")
    services.reply_flush(reply_id=outcome.reply.id, content="half a rep", reasoning="")
    assert services.replies_mark_interrupted(older_than=timedelta(seconds=30)) == []
    Message.objects.filter(id=outcome.reply.id).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    closed = services.replies_mark_interrupted(older_than=timedelta(seconds=30))
    assert [reply.id for reply in closed] == [outcome.reply.id]
    reply = Message.objects.get(id=outcome.reply.id)
    assert (reply.status, reply.content) == ("interrupted", "half a rep")


def _long_conversation(owner, model, turns: int, words: int = 40) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, model=model, system_prompt="Be brief.")
    parent = None
    for index in range(turns):
        for role in ("user", "assistant"):
            text = f"{role} turn {index} " + "word " * words
            parent = Message.objects.create(
                conversation=conversation,
                parent=parent,
                role=role,
                content=text,
                token_count=count_tokens(text) + 4,
            )
    conversation.current_leaf = parent
    conversation.save()
    return conversation


def test_history_keeps_each_request_inside_the_window_without_deleting_anything(alice):
    model = make_chat_model(
        "http://127.0.0.1:9/v1", name="tiny", context_window=1000, max_output_tokens=200
    )
    conversation = _long_conversation(alice, model, turns=60)
    newest = Message.objects.create(
        conversation=conversation,
        parent=conversation.current_leaf,
        role="user",
        content="And now?",
        token_count=count_tokens("And now?") + 4,
    )
    context = build_request_context(conversation=conversation, newest=newest, model=model)

    sent_tokens = sum(count_tokens(m["content"]) + 4 for m in context.messages)
    assert sent_tokens <= 1000 - 200
    assert context.messages[0] == {"role": "system", "content": "Be brief."}
    assert context.messages[-1]["content"] == "And now?"
    # What was left out is counted (for the page's divider) without being read.
    assert context.earlier_count > 0 and context.summarized_count == 0
    assert context.first_sent_id == context.sent_ids[0]
    # Whole turns are left out, oldest first: what is sent starts with a user message.
    assert context.messages[1]["role"] == "user"
    assert "turn 59" in context.messages[-2]["content"]
    assert Message.objects.filter(conversation=conversation).count() == 121


def test_a_message_too_large_for_the_window_is_refused_before_anything_is_stored(alice):
    model = make_chat_model(
        "http://127.0.0.1:9/v1", name="tiny", context_window=300, max_output_tokens=100
    )
    conversation = make_conversation(alice, model=model)
    with pytest.raises(ContextTooLarge) as caught:
        services.message_send(
            user=alice, conversation_id=conversation.id, content="lorem ipsum " * 400
        )
    assert "tokens" in caught.value.message and "at most" in caught.value.message
    assert not Message.objects.filter(conversation=conversation).exists()
