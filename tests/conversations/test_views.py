"""The HTTP side: pages, sidebar, rename, delete, and their access rules."""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse

from conversations.models import Conversation, Message
from tests.factories import make_chat_model, make_conversation, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat_model(fake_upstream):
    return make_chat_model(fake_upstream.base_url)


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_pages_need_a_signed_in_user(chat_model, alice):
    conversation = make_conversation(alice, model=chat_model)
    client = Client()
    for url in ("/", f"/c/{conversation.id}/", "/c/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_login_page_signs_in(alice):
    client = Client()
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_conversation_page_shows_every_message_on_its_branch(alice_client, alice, chat_model):
    conversation = make_conversation(alice, model=chat_model, title="Numbers", turns=3)
    page = alice_client.get(f"/c/{conversation.id}/").content.decode()
    for index in range(3):
        assert f"question {index}" in page and f"answer {index}" in page
    assert page.index("question 0") < page.index("answer 0") < page.index("question 2")
    assert 'aria-current="page"' in page


def test_the_page_names_the_controls_people_and_tests_use(alice_client):
    page = alice_client.get("/").content.decode()
    assert re.search(r'<label for="message-input"[^>]*>Message</label>', page)
    assert ">Send</button>" in page and ">Stop</button>" in page and ">New chat</button>" in page


def test_sidebar_lists_newest_first_and_pages_lazily(alice_client, alice, chat_model, settings):
    settings.CHAT_SIDEBAR_PAGE_SIZE = 5
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    for index in range(12):
        conversation = make_conversation(alice, model=chat_model, title=f"chat {index:02d}")
        Conversation.objects.filter(id=conversation.id).update(
            updated_at=now - timedelta(minutes=index)
        )
    first = alice_client.get("/").content.decode()
    titles = re.findall(r"chat \d\d", first)
    assert titles == [f"chat {i:02d}" for i in range(5)]
    assert 'hx-trigger="revealed"' in first
    second = alice_client.get("/c/?page=2").content.decode()
    assert re.findall(r"chat \d\d", second) == [f"chat {i:02d}" for i in range(5, 10)]
    third = alice_client.get("/c/?page=3").content.decode()
    assert re.findall(r"chat \d\d", third) == ["chat 10", "chat 11"]
    assert "revealed" not in third


def test_sidebar_never_lists_someone_elses_conversations(alice_client, chat_model):
    bob = make_user("bob")
    make_conversation(bob, model=chat_model, title="Bob's secret plans")
    assert "secret plans" not in alice_client.get("/").content.decode()
    assert "secret plans" not in alice_client.get("/c/").content.decode()


def test_rename_changes_the_title(alice_client, alice, chat_model):
    conversation = make_conversation(alice, model=chat_model, title="Old")
    response = alice_client.post(
        f"/c/{conversation.id}/rename/", {"title": "  New   name "}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert "New name" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.title == "New name"


def test_an_empty_title_is_refused_with_a_message(alice_client, alice, chat_model):
    conversation = make_conversation(alice, model=chat_model, title="Keep me")
    response = alice_client.post(
        f"/c/{conversation.id}/rename/", {"title": "   "}, HTTP_HX_REQUEST="true"
    )
    assert "cannot be empty" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.title == "Keep me"


def test_delete_removes_the_conversation_and_its_messages(alice_client, alice, chat_model):
    conversation = make_conversation(alice, model=chat_model, turns=2)
    response = alice_client.post(f"/c/{conversation.id}/delete/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/"
    assert not Conversation.objects.filter(id=conversation.id).exists()
    assert not Message.objects.filter(conversation_id=conversation.id).exists()


@pytest.mark.parametrize("action", ["view", "rename", "delete"])
def test_someone_elses_conversation_answers_404_and_nothing_changes(
    alice_client, chat_model, action
):
    bob = make_user("bob")
    bobs = make_conversation(bob, model=chat_model, title="Bob's", turns=1)
    missing = uuid.uuid4()
    for target in (bobs.id, missing):
        if action == "view":
            response = alice_client.get(f"/c/{target}/")
        elif action == "rename":
            response = alice_client.post(f"/c/{target}/rename/", {"title": "Mine now"})
        else:
            response = alice_client.post(f"/c/{target}/delete/")
        assert response.status_code == 404
    bobs.refresh_from_db()
    assert bobs.title == "Bob's"
    assert Message.objects.filter(conversation=bobs).count() == 2


@pytest.mark.parametrize(
    "url_name", ["conversation_rename", "conversation_delete", "logout", "login"]
)
def test_unsafe_views_refuse_a_request_without_a_csrf_token(alice, chat_model, url_name):
    conversation = make_conversation(alice, model=chat_model, title="Still here")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    if url_name.startswith("conversation_"):
        url = reverse(url_name, kwargs={"conversation_id": conversation.id})
    else:
        url = reverse(url_name)
    response = client.post(url, {"title": "x", "username": "alice", "password": "x"})
    assert response.status_code == 403
    assert Conversation.objects.filter(id=conversation.id, title="Still here").exists()


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


HOSTILE = """# Title
<script>alert(1)</script>
<img src=x onerror=alert(2)>
[click me](javascript:alert(3))
<a hx-get="/admin/" hx-trigger="load">htmx</a>
<div hx-post="/c/" hx-trigger="load">x</div>
![tracker](https://evil.example/pixel.png)
```"><script>alert(4)</script>
code
```
"""


def test_hostile_model_output_renders_inert(alice_client, alice, chat_model):
    conversation = make_conversation(alice, model=chat_model, title="Hostile")
    user = Message.objects.create(conversation=conversation, role="user", content="hi")
    reply = Message.objects.create(
        conversation=conversation,
        parent=user,
        role="assistant",
        content=HOSTILE,
        reasoning="<script>alert(5)</script>",
        status="complete",
    )
    conversation.current_leaf = reply
    conversation.save()
    page = alice_client.get(f"/c/{conversation.id}/").content.decode()
    body = page[page.index('id="messages"') :]
    body = body[: body.index('id="composer"')]
    parser = _Elements()
    parser.feed(body)
    for tag, attrs in parser.tags:
        assert tag not in {"script", "img", "iframe", "svg", "style"}
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert not name.startswith("hx-") or name == "hx-disable", (tag, name)
            assert "javascript:" not in (value or "").lower()
    assert "evil.example/pixel.png" not in body
    # What the model wrote is still shown, as text.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_pages_forbid_inline_script_and_third_party_requests(alice_client):
    response = alice_client.get("/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'self'" in policy
    assert "unsafe-inline" not in policy
