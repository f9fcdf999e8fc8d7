"""Export (Markdown, JSON, archive) and import, through the views a person uses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from conversations.models import Conversation, Message
from sharing import services
from sharing.transfer import parse_import
from tests.factories import make_chat_model, make_conversation, make_user
from tests.sharing.helpers import Elements, add_turn, signed_in

pytestmark = pytest.mark.django_db

UNICODE = (
    "Grüße 👋🏽 👨‍👩‍👧 — 你好\uff0c世界 — こんにちは — مرحبا بالعالم — שלום — e\u0301 — \u200f"
)
CODE = '```python\ndef héllo(名前: str) -> str:\n    return f"👋 {名前}"\n```\n\n```\n  indented\ttabs\n```'
REASONING = "First, think step by step.\n\n1. 中文 reasoning\n2. العربية\n\n```js\nlet x = 1;\n```"
MESSAGE_FIELDS = (
    "role",
    "content",
    "reasoning",
    "status",
    "finish_reason",
    "error_kind",
    "error",
    "model_name",
    "created_at",
    "updated_at",
    "token_count",
    "prompt_tokens",
    "completion_tokens",
    "usage_estimated",
)


@pytest.fixture
def chat_model(fake_upstream):
    return make_chat_model(fake_upstream.base_url)


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def alice_client(alice) -> Client:
    return signed_in(alice)


def _rich_conversation(owner, model) -> Conversation:
    """Unicode, code, reasoning, a branch, every status, usage counts, a system prompt."""
    title = " ".join(f"Rund\u00adreise 🌍 {UNICODE[:24]}".split())
    conversation = make_conversation(owner, model=model, title=title)
    Conversation.objects.filter(id=conversation.id).update(
        system_prompt=f"Answer in the user's language. {UNICODE}",
        created_at=datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC),
    )
    conversation.refresh_from_db()
    first_q, _ = add_turn(
        conversation,
        f"{UNICODE}\n\nline two\n",
        f"{CODE}\n\n{UNICODE}",
        reasoning=REASONING,
        model=model,
        prompt_tokens=120,
        completion_tokens=80,
        finish_reason="stop",
    )
    # A second reply to the same question: a branch that is not shown.
    Message.objects.create(
        conversation=conversation,
        parent=first_q,
        role="assistant",
        content="An earlier, stopped attempt",
        status="stopped",
        model_name="Older model",
        usage_estimated=True,
        completion_tokens=5,
        token_count=9,
    )
    add_turn(
        conversation,
        "And if it fails?",
        "",
        model=model,
        status="error",
        error_kind="rate_limited",
        error="Too many requests (HTTP 429).",
    )
    return conversation


def _upload(client: Client, data: bytes, name: str = "export.json"):
    upload = SimpleUploadedFile(name, data, content_type="application/json")
    return client.post(reverse("import_file"), {"file": upload})


def _assert_same(original: Conversation, copy: Conversation) -> None:
    for field in ("title", "system_prompt", "created_at", "updated_at", "model_id"):
        assert getattr(copy, field) == getattr(original, field), field
    before = list(Message.objects.filter(conversation=original).order_by("id"))
    after = list(Message.objects.filter(conversation=copy).order_by("id"))
    assert len(before) == len(after)
    position = {m.id: i for i, m in enumerate(before)}
    copied_position = {m.id: i for i, m in enumerate(after)}
    for old, new in zip(before, after, strict=True):
        for field in MESSAGE_FIELDS:
            assert getattr(new, field) == getattr(old, field), (field, old.id)
        # The same tree: parents point at the same positions.
        old_parent = position.get(old.parent_id) if old.parent_id else None
        new_parent = copied_position.get(new.parent_id) if new.parent_id else None
        assert old_parent == new_parent
    assert copied_position.get(copy.current_leaf_id) == position.get(original.current_leaf_id)


def test_export_json_holds_the_whole_tree_in_the_documented_format(alice_client, alice, chat_model):
    conversation = _rich_conversation(alice, chat_model)
    response = alice_client.get(reverse("export_json", args=[conversation.id]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment;")
    assert "no-store" in response["Cache-Control"]
    document = json.loads(response.content)
    assert document["format"] == "teamchat.conversation" and document["version"] == 1
    exported = document["conversation"]
    assert exported["title"] == conversation.title
    assert exported["model"] == chat_model.name
    assert exported["created_at"] == "2024-02-29T23:59:58.123456+00:00"
    messages = exported["messages"]
    assert [m["id"] for m in messages] == [1, 2, 3, 4, 5]
    assert [m["parent"] for m in messages] == [None, 1, 1, 2, 4]
    assert exported["current_leaf"] == 5
    assert messages[1]["reasoning"] == REASONING
    assert messages[1]["prompt_tokens"] == 120 and messages[1]["completion_tokens"] == 80
    assert messages[2]["status"] == "stopped" and messages[2]["usage_estimated"] is True
    assert messages[4]["error_kind"] == "rate_limited"
    # Unicode is written as it is, not as \u escapes.
    assert "你好" in response.content.decode("utf-8")
    # No internal ids in the file.
    assert str(conversation.id) not in response.content.decode()


def test_export_markdown_is_the_branch_shown(alice_client, alice, chat_model):
    conversation = _rich_conversation(alice, chat_model)
    response = alice_client.get(reverse("export_markdown", args=[conversation.id]))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment;")
    text = response.content.decode("utf-8")
    assert text.startswith(f"# {conversation.title}\n")
    assert CODE in text and UNICODE in text
    assert "> **Reasoning**" in text and "> 1. 中文 reasoning" in text
    assert "An earlier, stopped attempt" not in text  # another branch
    assert "the JSON export holds every branch" in text
    assert "## System prompt" in text
    assert text.index("line two") < text.index("def héllo") < text.index("And if it fails?")


def test_export_all_is_an_archive_of_ones_own_conversations(alice_client, alice, chat_model):
    make_conversation(alice, model=chat_model, title="First", turns=1)
    make_conversation(alice, model=chat_model, title="Second", turns=2)
    make_conversation(make_user("bob"), model=chat_model, title="Bob's", turns=1)
    response = alice_client.get(reverse("export_all"))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="team-chat-export-')
    document = json.loads(response.content)
    assert document["format"] == "teamchat.archive"
    titles = [c["title"] for c in document["conversations"]]
    assert titles == ["First", "Second"]
    assert [len(c["messages"]) for c in document["conversations"]] == [2, 4]


def test_export_needs_a_signed_in_owner(alice, chat_model):
    conversation = make_conversation(alice, model=chat_model, turns=1)
    for url in (
        reverse("export_json", args=[conversation.id]),
        reverse("export_markdown", args=[conversation.id]),
        reverse("export_all"),
        reverse("import_page"),
    ):
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_export_then_import_round_trips_a_conversation_unchanged(alice_client, alice, chat_model):
    original = _rich_conversation(alice, chat_model)
    exported = alice_client.get(reverse("export_json", args=[original.id])).content
    bob = make_user("bob")
    response = _upload(signed_in(bob), exported)
    copy = Conversation.objects.get(owner=bob)
    assert response.status_code == 302 and response["Location"] == f"/c/{copy.id}/"
    _assert_same(original, copy)
    # And exporting the copy gives the same document.
    again = json.loads(signed_in(bob).get(reverse("export_json", args=[copy.id])).content)
    first = json.loads(exported)
    assert again["conversation"] == first["conversation"]


def test_an_archive_round_trips_every_conversation(alice_client, alice, chat_model):
    originals = [
        _rich_conversation(alice, chat_model),
        make_conversation(alice, model=chat_model, title="Plain", turns=3),
        make_conversation(alice, model=chat_model, title="Empty"),
    ]
    archive = alice_client.get(reverse("export_all")).content
    bob = make_user("bob")
    bob_client = signed_in(bob)
    response = _upload(bob_client, archive, "all.json")
    assert response.status_code == 302 and response["Location"] == reverse("import_page")
    assert "Imported 3 conversations" in bob_client.get(reverse("import_page")).content.decode()
    copies = {c.title: c for c in Conversation.objects.filter(owner=bob)}
    assert len(copies) == 3
    for original in originals:
        _assert_same(original, copies[original.title])


def test_imported_content_is_still_sanitized(alice_client, alice):
    document = {
        "format": "teamchat.conversation",
        "version": 1,
        "conversation": {
            "title": "<script>alert('title')</script>",
            "messages": [
                {"id": "q", "role": "user", "content": "<img src=x onerror=alert(1)>"},
                {
                    "id": "a",
                    "parent": "q",
                    "role": "assistant",
                    "content": '<script>alert(2)</script>[x](javascript:alert(3))<a hx-get="/admin/">h</a>',
                    "reasoning": "<iframe src=https://evil.example></iframe>",
                },
            ],
        },
    }
    response = _upload(alice_client, json.dumps(document).encode())
    assert response.status_code == 302
    html = alice_client.get(response["Location"]).content.decode()
    section = html[html.index('id="messages"') : html.index('id="composer"')]
    for tag, attrs in Elements.of(section).tags:
        assert tag not in {"script", "img", "iframe"}
        for name, value in attrs.items():
            assert not name.startswith("on") and (
                not name.startswith("hx-") or name == "hx-disable"
            )
            assert "javascript:" not in (value or "")
    assert "&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt;" in html


def test_a_streaming_reply_is_imported_as_interrupted_with_its_text(alice_client, alice):
    document = {
        "format": "teamchat.conversation",
        "version": 1,
        "conversation": {
            "title": "Cut short",
            "messages": [
                {"id": 1, "role": "user", "content": "Tell me"},
                {
                    "id": 2,
                    "parent": 1,
                    "role": "assistant",
                    "content": "Once upon",
                    "status": "streaming",
                },
            ],
        },
    }
    assert _upload(alice_client, json.dumps(document).encode()).status_code == 302
    reply = Message.objects.get(role="assistant")
    assert (reply.status, reply.content) == ("interrupted", "Once upon")
    # Counts missing from the file are computed, so history trimming works on imports too.
    assert reply.token_count and Message.objects.get(role="user").token_count


def _doc(**conversation: object) -> bytes:
    base = {"title": "T", "messages": [{"id": 1, "role": "user", "content": "hi"}]}
    base.update(conversation)
    return json.dumps(
        {"format": "teamchat.conversation", "version": 1, "conversation": base}
    ).encode()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (b"this is not json", "not valid JSON"),
        (b'{"format": "teamchat.conversation", "version": 1, "conversation": {', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[1, 2, 3]", "not a Team Chat export"),
        (b'{"title": "x"}', "not a Team Chat export"),
        (b'{"format": "other.tool", "version": 1}', "is not one Team Chat reads"),
        (b'{"format": "teamchat.conversation", "version": 2}', "newer Team Chat"),
        (b'{"format": "teamchat.conversation", "version": "1"}', "version"),
        (b'{"format": "teamchat.conversation", "version": 1, "conversation": []}', "JSON object"),
        (b'{"format": "teamchat.archive", "version": 1, "conversations": []}', "no conversations"),
        (
            b'{"format": "teamchat.conversation", "version": 1, "conversation": {"messages": [{"id": 1, "role": "user", "content": "x", "token_count": NaN}]}}',
            "not valid JSON",
        ),
        (_doc(messages="nope"), "must be a list"),
        (_doc(messages=[{"id": 1, "role": "system", "content": "x"}]), "“role” must be one of"),
        (_doc(messages=[{"id": 1, "role": "user", "content": 5}]), "“content” must be a string"),
        (_doc(messages=[{"role": "user", "content": "x"}]), "“id” must be"),
        (
            _doc(messages=[{"id": 1, "role": "user"}, {"id": 1, "role": "assistant"}]),
            "used by another message",
        ),
        (
            _doc(messages=[{"id": 1, "role": "user", "parent": 2}, {"id": 2, "role": "user"}]),
            "listed before it",
        ),
        (_doc(messages=[{"id": 1, "role": "user", "content": "a\u0000b"}]), "NUL character"),
        (_doc(messages=[{"id": 1, "role": "user", "token_count": -1}]), "whole number"),
        (_doc(messages=[{"id": 1, "role": "user", "created_at": "yesterday"}]), "ISO 8601"),
        (_doc(messages=[{"id": 1, "role": "user", "status": "done"}]), "“status” must be"),
        (_doc(messages=[{"id": 1, "role": "user", "finish_reason": "x" * 41}]), "longer than 40"),
        (_doc(current_leaf=9), "“current_leaf” must be"),
    ],
)
def test_a_malformed_file_is_refused_with_a_clear_message_and_nothing_stored(
    alice_client, alice, chat_model, data, expected
):
    make_conversation(alice, model=chat_model, title="Existing", turns=1)
    response = _upload(alice_client, data)
    assert response.status_code == 400
    page = response.content.decode()
    alert = Elements.of(page)
    assert alert.find("p", role="alert")
    assert expected in page.replace("&quot;", '"').replace("&#x27;", "'")
    assert "Nothing was imported" in page
    assert Conversation.objects.count() == 1 and Message.objects.count() == 2


def test_an_oversize_file_is_refused_before_it_is_read(alice_client, settings):
    settings.CHAT_IMPORT_MAX_BYTES = 2_000
    big = _doc(messages=[{"id": 1, "role": "user", "content": "x" * 5_000}])
    response = _upload(alice_client, big)
    assert response.status_code == 400
    assert "larger than 2.0\xa0KB" in response.content.decode()
    assert not Conversation.objects.exists()
    # Just under the limit is fine.
    assert _upload(alice_client, _doc()).status_code == 302


def test_no_file_chosen_is_a_clear_error(alice_client):
    response = alice_client.post(reverse("import_file"), {})
    assert response.status_code == 400
    assert "Choose a JSON export file" in response.content.decode()


def test_an_archive_with_one_bad_conversation_imports_none_of_them(alice_client, alice):
    good = json.loads(_doc())["conversation"]
    bad = {"title": "bad", "messages": [{"id": 1, "role": "robot"}]}
    archive = {"format": "teamchat.archive", "version": 1, "conversations": [good, good, bad]}
    response = _upload(alice_client, json.dumps(archive).encode())
    assert response.status_code == 400
    assert "Conversation 3, message 1" in response.content.decode()
    assert not Conversation.objects.exists()


def test_a_failure_while_storing_leaves_nothing_half_imported(alice, monkeypatch):
    parsed = parse_import(
        json.dumps(
            {
                "format": "teamchat.archive",
                "version": 1,
                "conversations": [json.loads(_doc())["conversation"]] * 3,
            }
        ).encode()
    )
    real = services._conversation_from
    calls = []

    def failing(**kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(services, "_conversation_from", failing)
    with pytest.raises(RuntimeError):
        services.conversations_import(owner=alice, conversations=parsed)
    assert len(calls) == 3
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_times_without_a_zone_are_read_as_utc_and_missing_ones_are_now(alice):
    parsed = parse_import(
        _doc(
            created_at="2023-05-01T10:00:00",
            messages=[{"id": 1, "role": "user", "content": "x", "created_at": None}],
        )
    )
    [conversation] = services.conversations_import(owner=alice, conversations=parsed)
    assert conversation.created_at == datetime(2023, 5, 1, 10, tzinfo=UTC)
    message = Message.objects.get()
    assert abs(message.created_at - datetime.now(UTC)) < timedelta(hours=1)
