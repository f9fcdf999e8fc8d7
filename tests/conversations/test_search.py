"""Search across one's own conversations: PostgreSQL full-text search with its index, the
substring fallback, highlighting that stays escaped, and never another user's text."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client

from conversations import search as search_module
from conversations.models import Conversation, Message
from conversations.search import search
from tests.factories import make_chat_model, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat_model():
    return make_chat_model("http://127.0.0.1:9/v1")


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def bob():
    return make_user("bob")


@pytest.fixture(params=["postgresql", "substring"])
def backend(request, monkeypatch):
    """Each test runs against the full-text search and against the fallback used on SQLite."""
    if request.param == "substring":
        monkeypatch.setattr(connection, "vendor", "sqlite")
    elif connection.vendor != "postgresql":
        pytest.skip("full-text search needs PostgreSQL")
    return request.param


def _conversation(owner, title: str, *texts: str, archived: bool = False) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title=title, archived=archived)
    parent = None
    for index, text in enumerate(texts):
        parent = Message.objects.create(
            conversation=conversation,
            parent=parent,
            role="user" if index % 2 == 0 else "assistant",
            content=text,
        )
    conversation.current_leaf = parent
    conversation.save()
    return conversation


def test_finds_message_text_and_titles_and_marks_the_match(alice, backend):
    conversation = _conversation(
        alice,
        "Kubernetes upgrade plan",
        "How do I drain a node before the upgrade?",
        "Run kubectl drain with --ignore-daemonsets first.",
    )
    _conversation(alice, "Lunch", "Where shall we eat?")

    results = search(user=alice, query="drain")
    assert [hit.conversation_id for hit in results.messages] == [conversation.id] * 2
    assert all("<mark>drain</mark>" in hit.snippet for hit in results.messages)
    reply = results.messages[0]
    assert reply.role == "assistant"  # newest first
    assert (
        reply.url == f"/c/{conversation.id}/?message={reply.message_id}#message-{reply.message_id}"
    )

    titles = search(user=alice, query="kubernetes").titles
    assert [hit.conversation_id for hit in titles] == [conversation.id]
    assert "<mark>Kubernetes</mark>" in titles[0].snippet


def test_every_word_must_match_and_a_word_start_is_enough(alice, backend):
    _conversation(alice, "Notes", "The deployment pipeline failed on Tuesday")
    _conversation(alice, "Other", "The pipeline is green")
    assert len(search(user=alice, query="pipeline").messages) == 2
    assert len(search(user=alice, query="pipeline tuesday").messages) == 1
    assert len(search(user=alice, query="deploy").messages) == 1
    assert search(user=alice, query="pipeline wednesday").empty


def test_never_returns_another_users_messages_or_titles(alice, bob, backend):
    _conversation(bob, "Bob's zanzibar secrets", "The zanzibar launch code is 1234")
    _conversation(alice, "Mine", "Nothing about islands here")
    results = search(user=alice, query="zanzibar")
    assert results.empty
    # Bob finds his own.
    assert len(search(user=bob, query="zanzibar").messages) == 1


def test_snippets_are_escaped_text(alice, backend):
    _conversation(
        alice,
        "<b>bold</b> title",
        'Use <script>alert("owned")</script> with care and <img src=x onerror=alert(1)>',
    )
    hit = search(user=alice, query="care").messages[0]
    assert "<script>" not in hit.snippet and "<img" not in hit.snippet
    assert "&lt;" in hit.snippet  # shown as the text it is
    assert re.sub(r"</?mark>", "", hit.snippet).count("<") == 0
    title = search(user=alice, query="bold").titles[0]
    assert "<b>" not in title.snippet and "&lt;b&gt;" in title.snippet


def test_archived_conversations_are_found_and_marked(alice, backend):
    conversation = _conversation(alice, "Old project", "quarterly figures", archived=True)
    hit = search(user=alice, query="quarterly").messages[0]
    assert hit.conversation_id == conversation.id and hit.archived


def test_queries_without_words_find_nothing_and_punctuation_is_harmless(alice, backend):
    _conversation(alice, "Notes", "semi-colons; and & pipes | and ! bangs")
    assert search(user=alice, query="").empty
    assert search(user=alice, query="  ;&|!:*()' ").empty
    assert not search(user=alice, query="colons & | !").empty
    assert not search(user=alice, query="'semi'").empty


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")
def test_full_text_search_uses_its_indexes(alice):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname IN "
            "('msg_content_search', 'conv_title_search')"
        )
        assert {row[0] for row in cursor.fetchall()} == {"msg_content_search", "conv_title_search"}
    _conversation(alice, "Notes", "index me please")
    # The query's to_tsvector expression must be the index's, or the index is never used.
    from django.contrib.postgres.search import SearchQuery, SearchVector

    config = search_module.SEARCH_CONFIG
    queryset = (
        Message.objects.annotate(document=SearchVector("content", config=config))
        .filter(document=SearchQuery("index:*", config=config, search_type="raw"))
        .values("id")
    )
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            plan = queryset.explain()
        finally:
            cursor.execute("SET enable_seqscan = on")
    assert "msg_content_search" in plan


def test_the_search_page_links_to_the_message_and_shows_only_ones_own(alice, bob):
    mine = _conversation(alice, "Trip", "Book the ferry to Naxos", "Done, ferry booked.")
    _conversation(bob, "Bob's trip", "Bob's ferry to Paros")
    client = Client()
    client.force_login(alice)
    page = client.get("/search/", {"q": "ferry"}).content.decode()
    message_id = mine.current_leaf_id
    assert f"/c/{mine.id}/?message={message_id}#message-{message_id}" in page
    assert "<mark>ferry</mark>" in page
    assert "Paros" not in page and "Bob" not in page
    partial = client.get(
        "/search/", {"q": "ferry"}, headers={"HX-Request": "true", "HX-Target": "search-results"}
    )
    assert partial.content.decode().lstrip().startswith('<div id="search-results"')
    # The link opens the conversation with the message on the page.
    opened = client.get(f"/c/{mine.id}/", {"message": message_id}).content.decode()
    assert f'id="message-{message_id}"' in opened
    assert Client().get("/search/", {"q": "ferry"}).status_code == 302
