"""Pin, archive, the Archive page, and long conversations that load their newest messages first."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from conversations import selectors
from conversations.models import Conversation
from tests.factories import make_chat_model, make_conversation, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat_model():
    return make_chat_model("http://127.0.0.1:9/v1")


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def _titled(owner, titles: list[str]) -> dict[str, Conversation]:
    now = timezone.now()
    made = {}
    for index, title in enumerate(titles):
        conversation = make_conversation(owner, title=title)
        Conversation.objects.filter(id=conversation.id).update(
            updated_at=now - timedelta(minutes=index)
        )
        made[title] = conversation
    return made


def _sidebar_titles(html: str) -> list[str]:
    block = html[html.index('id="conversation-list"') :]
    block = block[: block.index("</ul>")]
    return re.findall(r'<span class="sidebar-title">([^<]*)</span>', block)


def test_pinned_conversations_come_first_in_the_sidebar(client, alice):
    made = _titled(alice, ["newest", "middle", "oldest"])
    response = client.post(
        f"/c/{made['oldest'].id}/pin/", {"pinned": "1"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert ">Unpin</button>" in body and 'aria-pressed="true"' in body
    # The sidebar comes along, out of band, in its new order.
    assert 'hx-swap-oob="innerHTML"' in body
    assert _sidebar_titles(body) == ["oldest", "newest", "middle"]
    assert _sidebar_titles(client.get("/").content.decode()) == ["oldest", "newest", "middle"]

    client.post(f"/c/{made['oldest'].id}/pin/", {"pinned": "0"})
    assert _sidebar_titles(client.get("/").content.decode()) == ["newest", "middle", "oldest"]


def test_archived_conversations_leave_the_sidebar_and_live_in_the_archive(client, alice):
    made = _titled(alice, ["keep", "old project"])
    target = made["old project"]
    response = client.post(f"/c/{target.id}/archive/", {"archived": "1"})
    assert response.status_code == 302

    home = client.get("/").content.decode()
    assert _sidebar_titles(home) == ["keep"]
    archive = client.get("/archive/").content.decode()
    assert "old project" in archive and ">Unarchive" in archive
    assert "keep" not in archive[archive.index("archive-list") :]
    # Still readable (and writable) where it is, marked as archived.
    page = client.get(f"/c/{target.id}/").content.decode()
    assert ">Archived</span>" in page and ">Unarchive</button>" in page

    client.post(f"/c/{target.id}/archive/", {"archived": "0", "next": "archive"})
    assert _sidebar_titles(client.get("/").content.decode()) == ["keep", "old project"]
    assert "Nothing is archived." in client.get("/archive/").content.decode()


def test_only_the_owner_can_pin_or_archive(client, alice):
    bob = make_user("bob")
    bobs = make_conversation(bob, title="Bob's")
    for action, field in (("pin", "pinned"), ("archive", "archived")):
        assert client.post(f"/c/{bobs.id}/{action}/", {field: "1"}).status_code == 404
        assert client.post(f"/c/{uuid.uuid4()}/{action}/", {field: "1"}).status_code == 404
    bobs.refresh_from_db()
    assert not bobs.pinned and not bobs.archived
    assert "Bob&#x27;s" not in client.get("/archive/").content.decode()
    assert client.get(f"/c/{bobs.id}/messages/?before=1").status_code == 404


def test_a_long_conversation_opens_with_its_newest_messages_and_loads_older_ones(
    client, alice, chat_model, settings
):
    settings.CHAT_THREAD_PAGE_SIZE = 10
    conversation = make_conversation(alice, model=chat_model, turns=15)  # 30 messages
    ids = selectors.path_ids(conversation=conversation)

    page = client.get(f"/c/{conversation.id}/").content.decode()
    shown = [int(i) for i in re.findall(r'data-message-id="(\d+)"', page)]
    assert shown == ids[-10:]
    assert "question 9" not in page and "answer 14" in page
    more = re.search(r'hx-get="(/c/[^"]+/messages/\?before=(\d+))"', page)
    assert more and int(more.group(2)) == ids[-10]

    older = client.get(more.group(1).replace("&amp;", "&")).content.decode()
    assert [int(i) for i in re.findall(r'data-message-id="(\d+)"', older)] == ids[-20:-10]
    last = re.search(r'hx-get="(/c/[^"]+/messages/\?before=(\d+))"', older)
    oldest = client.get(last.group(1)).content.decode()
    assert [int(i) for i in re.findall(r'data-message-id="(\d+)"', oldest)] == ids[:10]
    assert "before=" not in oldest

    # A link to an early message opens with it on the page.
    linked = client.get(f"/c/{conversation.id}/", {"message": ids[2]}).content.decode()
    assert f'id="message-{ids[2]}"' in linked


def test_messages_show_their_versions_and_actions(client, alice, chat_model):
    from conversations import services

    outcome = services.message_send(user=alice, conversation_id=None, content="Hi")
    services.reply_finish(
        reply_id=outcome.reply.id,
        content="Hello",
        reasoning="",
        status="complete",
        finish_reason="length",
    )
    page = client.get(f"/c/{outcome.conversation.id}/").content.decode()
    assert 'data-action="edit"' in page and 'data-action="regenerate"' in page
    assert 'data-action="continue"' in page and 'data-action="copy"' in page
    assert "branch-nav" not in page

    services.message_regenerate(
        user=alice, conversation_id=outcome.conversation.id, message_id=outcome.reply.id
    )
    page = client.get(f"/c/{outcome.conversation.id}/").content.decode()
    assert "2 / 2" in page and "Version 2 of 2" in page
    assert 'aria-label="Previous version"' in page
