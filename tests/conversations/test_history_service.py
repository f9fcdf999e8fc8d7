"""The history service's rules, against the real database (no upstream calls)."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.test import override_settings

from conversations import services
from conversations.history import (
    SUMMARY_HEADING,
    ContextTooLarge,
    build_request_context,
    plan_request,
    resolve_strategy,
    token_ratio,
)
from conversations.models import Conversation, Message, ReplyContext, Summary
from conversations.tokens import message_tokens
from tests.factories import make_chat_model, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def tiny():
    return make_chat_model(
        "http://127.0.0.1:9/v1", name="tiny", context_window=1000, max_output_tokens=200
    )


def _append(conversation: Conversation, parent: Message | None, role: str, text: str) -> Message:
    return Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=role,
        content=text,
        token_count=message_tokens(text),
    )


def _branch(conversation: Conversation, parent: Message | None, turns: int, tag: str) -> Message:
    for index in range(turns):
        parent = _append(conversation, parent, "user", f"{tag} question {index} " + "word " * 40)
        parent = _append(conversation, parent, "assistant", f"{tag} answer {index} " + "word " * 40)
    assert parent is not None
    return parent


def _summary(conversation: Conversation, first: Message, last: Message, text: str) -> Summary:
    return Summary.objects.create(
        conversation=conversation,
        first_message=first,
        last_message=last,
        message_count=last.depth + 1,
        content=text,
        token_count=message_tokens(text),
    )


def test_depth_is_set_from_the_parent_and_restored_for_stored_messages(alice, tiny):
    conversation = Conversation.objects.create(owner=alice, model=tiny)
    leaf = _branch(conversation, None, 3, "a")
    assert leaf.depth == 5
    Message.objects.filter(conversation=conversation).update(depth=0)
    migration = importlib.import_module("conversations.migrations.0002_context_management")
    migration.set_depths(apps, None)
    depths = list(
        Message.objects.filter(conversation=conversation)
        .order_by("id")
        .values_list("depth", flat=True)
    )
    assert depths == [0, 1, 2, 3, 4, 5]


def test_a_summary_of_another_branch_is_never_used(alice, tiny):
    conversation = Conversation.objects.create(owner=alice, model=tiny, context_strategy="drop")
    trunk = _branch(conversation, None, 3, "trunk")
    root = Message.objects.filter(conversation=conversation).order_by("id").first()
    other = _branch(conversation, trunk, 6, "other")
    mine = _branch(conversation, trunk, 6, "mine")
    _summary(conversation, root, other, "Summary of the other branch.")
    newest = _append(conversation, mine, "user", "And now?")

    context = build_request_context(conversation=conversation, newest=newest, model=tiny)
    conversation.context_strategy = "summarize"
    plan = plan_request(conversation=conversation, newest=newest, model=tiny)
    assert context.summary_id is None
    sent = " ".join(m["content"] for m in context.messages)
    assert "other" not in sent and "Summary of the other branch" not in sent
    # Planning for this branch ignores that summary: it must write one of its own.
    assert plan.work is not None and plan.work.base_summary_id is None
    assert plan.work.first_message_id == root.id


def test_a_summary_on_the_branch_is_reused_and_counted_for_the_divider(alice, tiny):
    conversation = Conversation.objects.create(owner=alice, model=tiny, system_prompt="Be brief.")
    old = _branch(conversation, None, 10, "old")
    root = Message.objects.filter(conversation=conversation).order_by("id").first()
    summary = _summary(conversation, root, old, "They planned a trip to Lisbon.")
    recent = _branch(conversation, old, 2, "recent")
    newest = _append(conversation, recent, "user", "Which day do we leave?")

    plan = plan_request(conversation=conversation, newest=newest, model=tiny)
    assert plan.work is None and plan.context is not None
    context = plan.context
    assert context.summary_id == summary.id
    assert context.messages[0]["content"] == (
        f"Be brief.\n\n{SUMMARY_HEADING}\n\nThey planned a trip to Lisbon."
    )
    assert [m["role"] for m in context.messages[1:]] == ["user", "assistant"] * 2 + ["user"]
    assert context.earlier_count == context.summarized_count == 20
    assert context.estimated_prompt_tokens == sum(
        message_tokens(m["content"]) for m in context.messages
    )


def test_a_message_that_fits_only_without_the_summary_is_refused_saying_why(alice, tiny):
    conversation = Conversation.objects.create(owner=alice, model=tiny)
    old = _branch(conversation, None, 2, "old")
    root = Message.objects.filter(conversation=conversation).order_by("id").first()
    _summary(conversation, root, old, "A long summary. " * 120)
    newest = _append(conversation, old, "user", "word " * 400)

    with pytest.raises(ContextTooLarge) as caught:
        plan_request(conversation=conversation, newest=newest, model=tiny)
    message = caught.value.message
    assert "the summary of earlier messages" in message
    assert "at most 736" in message and "shorten the message to under about" in message


def test_message_send_plans_summaries_instead_of_sending_when_turns_must_go(alice, tiny):
    conversation = Conversation.objects.create(owner=alice, model=tiny)
    leaf = _branch(conversation, None, 12, "old")
    Conversation.objects.filter(id=conversation.id).update(current_leaf=leaf)

    outcome = services.message_send(
        user=alice, conversation_id=conversation.id, content="Sum it up"
    )
    plan = outcome.plan
    assert plan is not None and plan.summarize is not None
    # Nothing is sent before the summary exists; the divider is recorded once it is built.
    assert plan.request.messages == []
    assert not ReplyContext.objects.filter(reply=outcome.reply).exists()
    work = plan.summarize
    covered = [i for step in work.steps for i in step.message_ids]
    assert covered == sorted(covered) and len(set(covered)) == len(covered)
    assert work.max_tokens == min(600, 736 // 4)
    assert outcome.reply.depth == outcome.user_message.depth + 1 == 25


def test_the_strategy_is_the_conversations_then_the_models_then_the_sites(alice, tiny):
    conversation = Conversation(owner=alice, model=tiny)
    with override_settings(CHAT_CONTEXT_STRATEGY="drop"):
        assert resolve_strategy(conversation=conversation, model=tiny) == "drop"
        tiny.context_strategy = "summarize"
        assert resolve_strategy(conversation=conversation, model=tiny) == "summarize"
        conversation.context_strategy = "drop"
        assert resolve_strategy(conversation=conversation, model=tiny) == "drop"


def test_reported_counts_move_the_ratio_within_bounds(tiny):
    assert token_ratio(tiny.id) == 1.0
    services.token_ratio_observe(chat_model_id=tiny.id, estimated=1000, reported=1300)
    assert token_ratio(tiny.id) == pytest.approx(1.3)
    # Later reports weigh more than earlier ones, and large prompts more than small ones.
    services.token_ratio_observe(chat_model_id=tiny.id, estimated=1000, reported=1000)
    assert 1.0 < token_ratio(tiny.id) < 1.15
    # An implausibly low count cannot stretch requests past the window by much...
    for _ in range(20):
        services.token_ratio_observe(chat_model_id=tiny.id, estimated=1000, reported=10)
    assert token_ratio(tiny.id) == 0.75
    # ...while a high one is followed.
    for _ in range(20):
        services.token_ratio_observe(chat_model_id=tiny.id, estimated=1000, reported=3000)
    assert token_ratio(tiny.id) == pytest.approx(3.0, rel=0.05)


def test_the_conversation_page_sets_its_strategy(alice, tiny, client):
    conversation = Conversation.objects.create(owner=alice, model=tiny, title="Trip")
    client.force_login(alice)
    url = f"/c/{conversation.id}/context/"

    page = client.get(f"/c/{conversation.id}/").content.decode()
    assert "Long chats: summarize" in page
    response = client.post(url, {"strategy": "drop"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Long chats: leave out" in html and "Saved" in html
    conversation.refresh_from_db()
    assert conversation.context_strategy == "drop"

    response = client.post(url, {"strategy": "forget"}, headers={"HX-Request": "true"})
    assert "Choose one of the options offered." in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.context_strategy == "drop"

    bob = make_user("bob")
    client.force_login(bob)
    assert client.post(url, {"strategy": ""}).status_code == 404
    conversation.refresh_from_db()
    assert conversation.context_strategy == "drop"
