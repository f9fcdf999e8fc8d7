"""The conversation tree: regenerate, edit, continue, branch switching, and the path that is
sent to the model. Services and selectors against the real database."""

from __future__ import annotations

import uuid

import pytest

from conversations import selectors, services
from conversations.errors import ChatError, ConversationNotFound
from conversations.history import CONTINUE_INSTRUCTION
from conversations.models import Conversation, Message
from tests.factories import make_chat_model, make_conversation, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat_model():
    return make_chat_model("http://127.0.0.1:9/v1")


@pytest.fixture
def alice():
    return make_user("alice")


def _finish(reply: Message, text: str, *, finish_reason: str = "stop", status: str = "complete"):
    return services.reply_finish(
        reply_id=reply.id, content=text, reasoning="", status=status, finish_reason=finish_reason
    )


def _exchange(user, conversation_id, question: str, answer: str, **finish):
    outcome = services.message_send(user=user, conversation_id=conversation_id, content=question)
    _finish(outcome.reply, answer, **finish)
    return outcome


def _sent(plan) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in plan.request.messages]


def _shown(conversation: Conversation) -> list[str]:
    conversation.refresh_from_db()
    return [m.content for m in selectors.messages_on_path(conversation=conversation)]


def test_regenerate_adds_a_sibling_reply_and_sends_the_path_without_the_old_one(alice, chat_model):
    first = _exchange(alice, None, "Name a colour", "Red")
    cid = first.conversation.id
    second = _exchange(alice, cid, "Another one", "Blue")

    outcome = services.message_regenerate(
        user=alice, conversation_id=cid, message_id=second.reply.id
    )

    reply = outcome.reply
    assert reply.parent_id == second.user_message.id
    assert reply.status == Message.Status.STREAMING
    assert _sent(outcome.plan) == [
        ("user", "Name a colour"),
        ("assistant", "Red"),
        ("user", "Another one"),
    ]
    conversation = Conversation.objects.get(id=cid)
    assert conversation.current_leaf_id == reply.id
    # Nothing is lost: the old reply is still stored, one version away.
    assert Message.objects.get(id=second.reply.id).content == "Blue"
    _finish(reply, "Green")
    assert _shown(conversation) == ["Name a colour", "Red", "Another one", "Green"]
    info = selectors.sibling_info([Message.objects.get(id=reply.id)])[reply.id]
    assert (info.position, info.count, info.previous_id, info.next_id) == (
        2,
        2,
        second.reply.id,
        None,
    )


def test_retry_of_an_interrupted_reply_is_a_regenerate(alice, chat_model):
    first = services.message_send(user=alice, conversation_id=None, content="Tell me a story")
    _finish(first.reply, "Once upon", status="interrupted")
    outcome = services.message_regenerate(
        user=alice, conversation_id=first.conversation.id, message_id=first.reply.id
    )
    assert outcome.reply.parent_id == first.user_message.id
    # The interrupted text is not part of the new request: only the question is.
    assert _sent(outcome.plan) == [("user", "Tell me a story")]


def test_edit_adds_a_sibling_message_with_the_same_parent_and_keeps_the_old_branch(
    alice, chat_model
):
    first = _exchange(alice, None, "What is 2+2?", "4")
    cid = first.conversation.id
    second = _exchange(alice, cid, "And 3+3?", "6")
    _exchange(alice, cid, "Thanks", "You're welcome")

    outcome = services.message_edit(
        user=alice, conversation_id=cid, message_id=second.user_message.id, content="And 5+5?"
    )

    assert outcome.branched
    assert outcome.user_message.parent_id == second.user_message.parent_id == first.reply.id
    assert _sent(outcome.plan) == [
        ("user", "What is 2+2?"),
        ("assistant", "4"),
        ("user", "And 5+5?"),
    ]
    _finish(outcome.reply, "10")
    conversation = Conversation.objects.get(id=cid)
    assert _shown(conversation) == ["What is 2+2?", "4", "And 5+5?", "10"]
    # The old branch, with the turn that followed it, is all still there.
    assert Message.objects.filter(conversation_id=cid).count() == 8


def test_editing_the_first_message_makes_a_second_root(alice, chat_model):
    first = _exchange(alice, None, "Hello", "Hi")
    cid = first.conversation.id
    outcome = services.message_edit(
        user=alice, conversation_id=cid, message_id=first.user_message.id, content="Hello there"
    )
    assert outcome.user_message.parent_id is None
    assert _sent(outcome.plan) == [("user", "Hello there")]
    roots = selectors.sibling_info([outcome.user_message])[outcome.user_message.id]
    assert (roots.position, roots.count, roots.previous_id) == (2, 2, first.user_message.id)


def test_switching_shows_the_newest_leaf_under_the_chosen_version_and_is_stored(alice, chat_model):
    first = _exchange(alice, None, "Q1", "A1")
    cid = first.conversation.id
    _exchange(alice, cid, "Q2", "A2")
    _exchange(alice, cid, "Q3", "A3")
    edited = services.message_edit(
        user=alice, conversation_id=cid, message_id=first.user_message.id, content="Q1 edited"
    )
    _finish(edited.reply, "A1 edited")

    conversation = services.conversation_switch_branch(
        user=alice, conversation_id=cid, message_id=first.user_message.id
    )
    # Stored: a fresh read (a reload) shows the old branch down to its newest message.
    fresh = Conversation.objects.get(id=cid)
    assert fresh.current_leaf_id == conversation.current_leaf_id
    assert _shown(fresh) == ["Q1", "A1", "Q2", "A2", "Q3", "A3"]

    services.conversation_switch_branch(
        user=alice, conversation_id=cid, message_id=edited.user_message.id
    )
    assert _shown(Conversation.objects.get(id=cid)) == ["Q1 edited", "A1 edited"]

    # The next message follows the branch shown, and the model sees only that branch.
    follow_up = services.message_send(user=alice, conversation_id=cid, content="Q2 again")
    assert _sent(follow_up.plan) == [
        ("user", "Q1 edited"),
        ("assistant", "A1 edited"),
        ("user", "Q2 again"),
    ]


def test_a_send_from_a_page_showing_another_branch_follows_that_branch(alice, chat_model):
    first = _exchange(alice, None, "Q1", "A1")
    cid = first.conversation.id
    old = _exchange(alice, cid, "Q2", "A2")
    regenerated = services.message_regenerate(
        user=alice, conversation_id=cid, message_id=old.reply.id
    )
    _finish(regenerated.reply, "A2 again")

    # This page still shows the first version of the reply.
    outcome = services.message_send(
        user=alice, conversation_id=cid, content="Q3", parent_id=old.reply.id
    )
    assert outcome.branched
    assert outcome.user_message.parent_id == old.reply.id
    assert _sent(outcome.plan)[-2:] == [("assistant", "A2"), ("user", "Q3")]
    assert Conversation.objects.get(id=cid).current_leaf_id == outcome.reply.id


def test_continue_sends_the_cut_reply_and_stores_the_rest_as_a_new_reply(alice, chat_model):
    first = _exchange(alice, None, "Write a long poem", "Roses are red,", finish_reason="length")
    cid = first.conversation.id

    outcome = services.message_continue(user=alice, conversation_id=cid, message_id=first.reply.id)

    assert outcome.reply.parent_id == first.reply.id
    assert _sent(outcome.plan) == [
        ("user", "Write a long poem"),
        ("assistant", "Roses are red,"),
        ("user", CONTINUE_INSTRUCTION),
    ]
    # The cut reply is stored as it was.
    cut = Message.objects.get(id=first.reply.id)
    assert (cut.content, cut.finish_reason) == ("Roses are red,", "length")
    _finish(outcome.reply, " violets are blue.", finish_reason="length")

    # Cut again: the second continuation sends both parts as one assistant message.
    again = services.message_continue(user=alice, conversation_id=cid, message_id=outcome.reply.id)
    assert _sent(again.plan)[-2] == ("assistant", "Roses are red, violets are blue.")
    _finish(again.reply, " The end.")

    # A follow-up sends the whole reply once, as one assistant message (roles alternate).
    follow = services.message_send(user=alice, conversation_id=cid, content="Thanks!")
    assert _sent(follow.plan) == [
        ("user", "Write a long poem"),
        ("assistant", "Roses are red, violets are blue. The end."),
        ("user", "Thanks!"),
    ]
    shown = selectors.messages_on_path(conversation=Conversation.objects.get(id=cid))
    assert [m.continues for m in shown] == [False, False, True, True, False, False]


def test_only_a_reply_cut_by_the_length_limit_can_be_continued(alice, chat_model):
    first = _exchange(alice, None, "Hi", "Hello")
    with pytest.raises(ChatError) as caught:
        services.message_continue(
            user=alice, conversation_id=first.conversation.id, message_id=first.reply.id
        )
    assert caught.value.code == "not_continuable"
    with pytest.raises(ChatError) as caught:
        services.message_continue(
            user=alice, conversation_id=first.conversation.id, message_id=first.user_message.id
        )
    assert caught.value.code == "not_continuable"


def test_tree_actions_refuse_the_wrong_kind_of_message(alice, chat_model):
    first = _exchange(alice, None, "Hi", "Hello")
    cid = first.conversation.id
    with pytest.raises(ChatError) as caught:
        services.message_regenerate(
            user=alice, conversation_id=cid, message_id=first.user_message.id
        )
    assert caught.value.code == "not_regenerable"
    with pytest.raises(ChatError) as caught:
        services.message_edit(
            user=alice, conversation_id=cid, message_id=first.reply.id, content="changed"
        )
    assert caught.value.code == "not_editable"
    with pytest.raises(ChatError) as caught:
        services.message_edit(
            user=alice, conversation_id=cid, message_id=first.user_message.id, content="  "
        )
    assert caught.value.code == "empty"
    assert Message.objects.filter(conversation_id=cid).count() == 2


@pytest.mark.parametrize("message_id", [None, "x", 0, -1, 2**70, True, [1], "99999999"])
def test_bad_message_ids_are_not_found(alice, chat_model, message_id):
    first = _exchange(alice, None, "Hi", "Hello")
    with pytest.raises(ChatError) as caught:
        services.conversation_switch_branch(
            user=alice, conversation_id=first.conversation.id, message_id=message_id
        )
    assert caught.value.code == "not_found"


def test_nobody_else_can_regenerate_edit_continue_or_switch(alice, chat_model):
    first = _exchange(alice, None, "Alice's question", "An answer", finish_reason="length")
    bob = make_user("bob")
    cid = first.conversation.id
    actions = [
        lambda: services.message_regenerate(
            user=bob, conversation_id=cid, message_id=first.reply.id
        ),
        lambda: services.message_continue(user=bob, conversation_id=cid, message_id=first.reply.id),
        lambda: services.message_edit(
            user=bob, conversation_id=cid, message_id=first.user_message.id, content="mine now"
        ),
        lambda: services.conversation_switch_branch(
            user=bob, conversation_id=cid, message_id=first.user_message.id
        ),
    ]
    for action in actions:
        with pytest.raises(ConversationNotFound):
            action()
    # Nor through a conversation of his own: the message must belong to the conversation named.
    bobs = make_conversation(bob, model=chat_model, turns=1)
    with pytest.raises(ChatError) as caught:
        services.message_regenerate(user=bob, conversation_id=bobs.id, message_id=first.reply.id)
    assert caught.value.code == "not_found"
    assert Message.objects.filter(conversation_id=cid).count() == 2


def test_a_regenerate_resent_with_the_same_client_id_starts_nothing_new(alice, chat_model):
    first = _exchange(alice, None, "Hi", "Hello")
    client_id = uuid.uuid4()
    kwargs = {
        "user": alice,
        "conversation_id": first.conversation.id,
        "message_id": first.reply.id,
        "client_id": client_id,
    }
    once = services.message_regenerate(**kwargs)
    again = services.message_regenerate(**kwargs)
    assert again.plan is None and again.reply.id == once.reply.id
    assert Message.objects.filter(parent_id=first.user_message.id).count() == 2


def test_a_regenerate_while_a_reply_streams_is_refused_and_stores_nothing(alice, chat_model):
    first = _exchange(alice, None, "Hi", "Hello")
    services.message_send(user=alice, conversation_id=first.conversation.id, content="More")
    with pytest.raises(ChatError) as caught:
        services.message_regenerate(
            user=alice, conversation_id=first.conversation.id, message_id=first.reply.id
        )
    assert caught.value.code == "busy"
    assert Message.objects.filter(parent_id=first.user_message.id).count() == 1


def test_the_thread_window_reads_only_the_newest_messages_and_pages_upwards(
    alice, chat_model, settings, django_assert_max_num_queries
):
    conversation = make_conversation(alice, model=chat_model, turns=30)  # 60 messages
    ids = selectors.path_ids(conversation=conversation)
    assert len(ids) == 60

    with django_assert_max_num_queries(4):
        window = selectors.thread_window(conversation=conversation, size=10)
    assert [m.id for m in window.messages] == ids[-10:]
    assert window.older_than == ids[-10]
    assert window.messages[-1].is_leaf

    older = selectors.thread_window(conversation=conversation, before=window.older_than, size=25)
    assert [m.id for m in older.messages] == ids[-35:-10]
    oldest = selectors.thread_window(conversation=conversation, before=older.older_than, size=25)
    assert [m.id for m in oldest.messages] == ids[:25]
    assert oldest.older_than is None

    # A link to an old message widens the window up to it.
    linked = selectors.thread_window(conversation=conversation, include=ids[5], size=10)
    assert [m.id for m in linked.messages] == ids[5:]


def test_a_link_to_a_message_on_another_branch_shows_that_branch(alice, chat_model):
    first = _exchange(alice, None, "Q1", "A1")
    cid = first.conversation.id
    old = _exchange(alice, cid, "Q2", "A2")
    edited = services.message_edit(
        user=alice, conversation_id=cid, message_id=old.user_message.id, content="Q2b"
    )
    conversation = Conversation.objects.get(id=cid)
    assert selectors.leaf_through(conversation=conversation, message_id=old.reply.id) == (
        old.reply.id
    )
    assert (
        selectors.leaf_through(conversation=conversation, message_id=first.reply.id)
        == edited.reply.id
    )
    # Showing it does not store it.
    assert Conversation.objects.get(id=cid).current_leaf_id == edited.reply.id


def test_a_generated_title_never_replaces_one_the_user_chose(alice, chat_model):
    first = _exchange(alice, None, "Plan the offsite", "Sure")
    conversation = Conversation.objects.get(id=first.conversation.id)
    services.conversation_rename(conversation=conversation, title="Offsite 2025")
    fields = {
        "conversation_id": conversation.id,
        "user_id": alice.pk,
        "title": "Team Offsite Planning",
        "chat_model_id": chat_model.pk,
        "model_name": chat_model.name,
        "prompt_tokens": 50,
        "completion_tokens": 4,
        "estimated": False,
    }
    assert services.conversation_title_generated(**fields) is None
    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_source) == ("Offsite 2025", "user")
    assert (conversation.title_prompt_tokens, conversation.title_completion_tokens) == (50, 4)

    other = _exchange(alice, None, "Plan the party", "Sure")
    changed = services.conversation_title_generated(
        **{**fields, "conversation_id": other.conversation.id}
    )
    assert changed is not None and changed.title == "Team Offsite Planning"
    assert changed.title_source == "model"


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ('"Reversing Lists in Python"', "Reversing Lists in Python"),
        ("Title: **Offsite Planning**.\nHere is why…", "Offsite Planning"),
        ("<think>The user wants a title</think>Budget Review", "Budget Review"),
        ("<think>still thinking", ""),
        ("   \n  ", ""),
        ("x" * 200, "x" * 79 + "…"),
    ],
)
def test_clean_title(answer, title):
    from conversations.titles import clean_title

    assert clean_title(answer) == title
