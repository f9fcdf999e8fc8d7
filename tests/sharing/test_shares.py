"""Share links: creating, updating, revoking, the shared page, continuing, and who may do what."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations import services as chat_services
from conversations.models import Conversation, Message
from sharing import selectors
from sharing.models import Share
from tests.factories import make_chat_model, make_conversation, make_user
from tests.sharing.helpers import Elements, add_turn, share_form, signed_in

pytestmark = pytest.mark.django_db

TOKEN_PATH = re.compile(r"/s/([A-Za-z0-9_-]{43})/")


@pytest.fixture
def chat_model(fake_upstream):
    return make_chat_model(
        fake_upstream.base_url,
        api_key="sk-very-secret-key-123",
        context_window=123457,
        max_output_tokens=54321,
    )


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def alice_client(alice) -> Client:
    return signed_in(alice)


@pytest.fixture
def conversation(alice, chat_model):
    return make_conversation(alice, model=chat_model, title="Trip planning", turns=2)


def _share(client: Client, conversation: Conversation, **form: object) -> Share:
    response = client.post(
        reverse("share_save", args=[conversation.id]), share_form(**form), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200, response.content
    return Share.objects.get(conversation=conversation)


def _url(share: Share) -> str:
    return reverse("shared_conversation", args=[share.token])


def test_sharing_creates_an_unguessable_link_that_shows_the_conversation(
    alice_client, conversation
):
    response = alice_client.post(
        reverse("share_save", args=[conversation.id]), share_form(), HTTP_HX_REQUEST="true"
    )
    panel = response.content.decode()
    share = Share.objects.get(conversation=conversation)
    # 32 random bytes from secrets, URL-safe, in the path; not derived from any id.
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", share.token)
    assert str(conversation.id) not in share.token and conversation.id.hex not in share.token
    assert f"http://testserver/s/{share.token}/" in panel
    assert "Update share" in panel and "Revoke and create a new link" in panel

    page = Client().get(_url(share))
    assert page.status_code == 200
    html = page.content.decode()
    for index in range(2):
        assert f"question {index}" in html and f"answer {index}" in html
    assert "Trip planning" in html


def test_every_share_gets_its_own_random_token(alice, alice_client, chat_model):
    tokens = set()
    for index in range(5):
        conversation = make_conversation(alice, model=chat_model, title=f"c{index}", turns=1)
        tokens.add(_share(alice_client, conversation).token)
    assert len(tokens) == 5


def test_the_shared_page_stays_out_of_search_and_describes_itself(alice_client, conversation):
    Message.objects.filter(conversation=conversation, content="question 0").update(
        content="How should we   plan a week in Lisbon with two kids and a small budget?"
    )
    share = _share(alice_client, conversation)
    response = Client().get(_url(share))
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert "no-store" in response["Cache-Control"]
    doc = Elements.of(response.content.decode())
    assert doc.find("meta", name="robots")[0]["content"].startswith("noindex")
    description = doc.find("meta", name="description")[0]["content"]
    assert description == "How should we plan a week in Lisbon with two kids and a small budget?"
    title = "".join(response.content.decode().split("<title>")[1].split("</title>")[0])
    assert title.startswith("Trip planning")


def test_the_link_shows_a_snapshot_until_the_owner_updates_it(alice_client, conversation):
    share = _share(alice_client, conversation)
    add_turn(conversation, "a later question", "a later answer")
    assert "a later question" not in Client().get(_url(share)).content.decode()
    # Updating keeps the URL and now shows the new messages.
    updated = _share(alice_client, conversation)
    assert updated.token == share.token
    html = Client().get(_url(share)).content.decode()
    assert "a later question" in html and "a later answer" in html


def test_a_reply_still_being_written_is_left_out_of_the_snapshot(alice_client, conversation):
    user_message, reply = add_turn(
        conversation, "still going?", "half a rep", status=Message.Status.STREAMING
    )
    share = _share(alice_client, conversation)
    assert share.message_ids[-1] == user_message.id
    assert reply.id not in share.message_ids


def test_an_empty_conversation_cannot_be_shared(alice, alice_client, chat_model):
    empty = make_conversation(alice, model=chat_model)
    response = alice_client.post(
        reverse("share_save", args=[empty.id]), share_form(), HTTP_HX_REQUEST="true"
    )
    assert "nothing to share yet" in response.content.decode()
    assert not Share.objects.exists()


def test_revoke_and_create_a_new_link(alice_client, conversation):
    old = _share(alice_client, conversation)
    Client().get(_url(old))
    response = alice_client.post(
        reverse("share_rotate", args=[conversation.id]), share_form(), HTTP_HX_REQUEST="true"
    )
    new = Share.objects.get(conversation=conversation)
    assert new.token != old.token and new.views == 0
    assert new.token in response.content.decode()
    assert Client().get(_url(old)).status_code == 404
    assert Client().get(_url(new)).status_code == 200


def test_a_revoked_link_answers_404_at_once(alice_client, conversation):
    share = _share(alice_client, conversation)
    viewer = Client()
    assert viewer.get(_url(share)).status_code == 200
    response = alice_client.post(reverse("share_revoke", args=[conversation.id]))
    assert response.status_code == 302
    assert viewer.get(_url(share)).status_code == 404
    assert not Share.objects.exists()


def test_an_expired_link_answers_404(alice_client, conversation):
    share = _share(alice_client, conversation)
    Share.objects.filter(id=share.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert Client().get(_url(share)).status_code == 404
    # The owner still sees it, marked expired, and can open it again with a new date.
    shares = alice_client.get(reverse("share_list")).content.decode()
    assert "Expired" in shares
    tomorrow = (timezone.localdate() + timedelta(days=2)).isoformat()
    _share(alice_client, conversation, expires_on=tomorrow)
    assert Client().get(_url(share)).status_code == 200


def test_an_expiry_date_ends_the_link_when_that_day_begins(alice_client, conversation):
    day = timezone.localdate() + timedelta(days=3)
    share = _share(alice_client, conversation, expires_on=day.isoformat())
    assert timezone.localtime(share.expires_at).date() == day
    assert timezone.localtime(share.expires_at).hour == 0
    assert selectors.share_get_by_token(token=share.token).id == share.id
    with pytest.raises(Exception, match="no longer shared"):
        selectors.share_get_by_token(token=share.token, now=share.expires_at)


@pytest.mark.parametrize("day", [0, -5])
def test_an_expiry_date_in_the_past_is_refused_and_nothing_is_saved(
    alice_client, conversation, day
):
    when = (timezone.localdate() + timedelta(days=day)).isoformat()
    response = alice_client.post(
        reverse("share_save", args=[conversation.id]),
        share_form(expires_on=when),
        HTTP_HX_REQUEST="true",
    )
    assert "Pick an expiry date after today" in response.content.decode()
    assert not Share.objects.exists()


def test_deleting_the_conversation_revokes_its_link(alice_client, conversation):
    share = _share(alice_client, conversation)
    alice_client.post(reverse("conversation_delete", args=[conversation.id]))
    assert Client().get(_url(share)).status_code == 404
    assert not Share.objects.exists()


def test_members_only_links_ask_for_a_sign_in(alice_client, conversation):
    share = _share(alice_client, conversation, visibility="members")
    anonymous = Client().get(_url(share))
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/?next=/s/")
    member = signed_in(make_user("carol"))
    assert member.get(_url(share)).status_code == 200


def test_members_only_links_open_only_for_the_owners_teams(alice, alice_client, conversation):
    from teams.services import membership_add, team_create

    team = team_create(name="Research")
    membership_add(team=team, identifier="alice", role="admin")
    share = _share(alice_client, conversation, visibility="members")
    colleague = make_user("carol")
    membership_add(team=team, identifier="carol")
    outsider = make_user("mallory")

    assert signed_in(colleague).get(_url(share)).status_code == 200
    assert signed_in(outsider).get(_url(share)).status_code == 404
    continued = signed_in(outsider).post(f"{_url(share)}continue/")
    assert continued.status_code == 404
    assert not Conversation.objects.filter(owner=outsider).exists()
    assert alice_client.get(_url(share)).status_code == 200


def test_views_are_counted(alice_client, conversation):
    share = _share(alice_client, conversation)
    for _ in range(3):
        Client().get(_url(share))
    share.refresh_from_db()
    assert share.views == 3
    shares = alice_client.get(reverse("share_list")).content.decode()
    assert re.search(r"<td>3</td>", shares)


def test_unknown_or_malformed_tokens_answer_404(db):
    for token in ["x", "A" * 43, "A" * 44, "../../admin", "%00" * 20]:
        assert Client().get(f"/s/{token}/").status_code == 404


def test_the_shares_page_lists_only_ones_own_links(alice, alice_client, conversation, chat_model):
    _share(alice_client, conversation, visibility="members")
    bob = make_user("bob")
    bobs = make_conversation(bob, model=chat_model, title="Bob's secret", turns=1)
    _share(signed_in(bob), bobs)
    page = alice_client.get(reverse("share_list")).content.decode()
    assert "Trip planning" in page and "Only signed-in members" in page
    assert "Bob's secret" not in page
    assert Share.objects.get(conversation=bobs).token not in page


# --- other people's conversations: every share action is 404 and nothing changes ------------
@pytest.mark.parametrize(
    "action", ["panel", "create", "update", "rotate", "revoke", "export_json", "export_md"]
)
def test_someone_elses_conversation_answers_404_for_every_share_action(
    alice_client, chat_model, action
):
    bob = make_user("bob")
    bob_client = signed_in(bob)
    shared = make_conversation(bob, model=chat_model, title="Bob's shared", turns=1)
    unshared = make_conversation(bob, model=chat_model, title="Bob's private", turns=1)
    share = _share(bob_client, shared)
    before = list(Share.objects.values())

    for target in (shared, unshared):
        for conversation_id in (target.id, uuid.uuid4()):
            if action == "panel":
                response = alice_client.get(reverse("share_panel", args=[conversation_id]))
            elif action in ("create", "update"):
                response = alice_client.post(
                    reverse("share_save", args=[conversation_id]),
                    share_form(visibility="members"),
                )
            elif action == "rotate":
                response = alice_client.post(
                    reverse("share_rotate", args=[conversation_id]), share_form()
                )
            elif action == "revoke":
                response = alice_client.post(reverse("share_revoke", args=[conversation_id]))
            elif action == "export_json":
                response = alice_client.get(reverse("export_json", args=[conversation_id]))
            else:
                response = alice_client.get(reverse("export_markdown", args=[conversation_id]))
            assert response.status_code == 404, (action, target.title)
            assert b"Bob's" not in response.content

    assert list(Share.objects.values()) == before
    assert Client().get(_url(share)).status_code == 200
    assert "Bob's" not in alice_client.get(reverse("share_list")).content.decode()


@pytest.mark.parametrize(
    "url_name", ["share_save", "share_rotate", "share_revoke", "share_continue", "import_file"]
)
def test_unsafe_share_views_are_post_only_and_need_a_csrf_token(
    alice, alice_client, conversation, url_name
):
    share = _share(alice_client, conversation)
    before = list(Share.objects.values())
    if url_name == "share_continue":
        url = reverse(url_name, args=[share.token])
    elif url_name == "import_file":
        url = reverse(url_name)
    else:
        url = reverse(url_name, args=[conversation.id])
    assert alice_client.get(url).status_code == 405
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(url, share_form(visibility="members"))
    assert response.status_code == 403
    assert list(Share.objects.values()) == before
    assert Conversation.objects.count() == 1


# --- what the shared page shows, and what it never shows --------------------------------------
HOSTILE = """# Title
<script>alert(1)</script>
<img src=x onerror=alert(2)>
<svg onload=alert(3)></svg>
[click me](javascript:alert(4))
[data](data:text/html;base64,PHNjcmlwdD5hbGVydCg1KTwvc2NyaXB0Pg==)
<a href="#" onclick="alert(6)">x</a>
<a hx-get="/admin/" hx-trigger="load">htmx</a>
<div hx-post="/c/" hx-trigger="load">x</div>
<iframe src="https://evil.example/"></iframe>
![tracker](https://evil.example/pixel.png)
```"><script>alert(7)</script>
code
```
"""

LONG_BLOCK = "```python\n" + ("x = 1  # <b>not bold</b>\n" * 2500)[:60_000] + "\n```"


def _messages_section(html: str) -> str:
    start = html.index('aria-label="Messages"')
    return html[start : html.index('class="shared-footer"')]


def test_hostile_content_renders_inert_on_the_shared_page(alice, alice_client, chat_model):
    conversation = make_conversation(alice, model=chat_model, title="Hostile")
    add_turn(
        conversation,
        '<script>alert("user")</script><a hx-get="/admin/">x</a>',
        HOSTILE,
        reasoning='<script>alert("reasoning")</script><img src=x onerror=alert(8)>',
        model=chat_model,
    )
    add_turn(conversation, "and a long one", LONG_BLOCK, model=chat_model)
    assert len(LONG_BLOCK) > 60_000
    share = _share(alice_client, conversation)

    response = Client().get(_url(share))
    assert response.status_code == 200
    html = response.content.decode()
    section = _messages_section(html)
    doc = Elements.of(section)
    for tag, attrs in doc.tags:
        assert tag not in {"script", "img", "iframe", "svg", "style", "object", "embed"}, tag
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert not name.startswith("hx-") or name == "hx-disable", (tag, name)
            assert not name.startswith("data-hx"), (tag, name)
            lowered = (value or "").lower()
            assert "javascript:" not in lowered and "data:text" not in lowered, (tag, name)
            assert "evil.example" not in lowered, (tag, name)
    for _, attrs in Elements.of(html).tags:
        assert not any(name.startswith("on") for name in attrs)
    assert html.count("<script") == html.count("<script src=")  # only the page's own files
    text = "".join(doc.text)
    assert '<script>alert("user")</script>' in text  # what was written, shown as text
    assert "<script>alert(1)</script>" in text
    # The 60,000-character block is there in full, as escaped text.
    assert text.count("x = 1  # <b>not bold</b>") == 60_000 // len("x = 1  # <b>not bold</b>\n")
    assert "<b>" not in section
    # Reasoning is collapsed: a <details> without "open".
    details = doc.find("details")
    assert details and all("open" not in d for d in details)


def test_code_is_highlighted_on_the_shared_page(alice, alice_client, chat_model):
    conversation = make_conversation(alice, model=chat_model, title="Code")
    add_turn(
        conversation, "show me", "```python\ndef greet():\n    return 1\n```", model=chat_model
    )
    share = _share(alice_client, conversation)
    doc = Elements.of(Client().get(_url(share)).content.decode())
    assert doc.find("div", **{"class": "codeblock", "data-lang": "python"})
    assert doc.find("span", **{"class": "k"})  # a keyword span from Pygments


def test_the_shared_page_holds_nothing_private(alice, alice_client, chat_model):
    conversation = make_conversation(alice, model=chat_model, title="Budget review")
    Conversation.objects.filter(id=conversation.id).update(
        system_prompt="SYSTEM-PROMPT-SECRET: you are the CFO's assistant"
    )
    conversation.refresh_from_db()
    # Large explicit ids so that a leak would be recognisable in the page.
    question = Message.objects.create(
        id=987654321, conversation=conversation, role="user", content="Is Q3 on track?"
    )
    reply = Message.objects.create(
        id=987654322,
        conversation=conversation,
        parent=question,
        role="assistant",
        content="Mostly.",
        model=chat_model,
        model_name=chat_model.label,
    )
    failed = Message.objects.create(
        id=987654323,
        conversation=conversation,
        parent=reply,
        role="assistant",
        status="error",
        error=f"Could not connect to the provider at {chat_model.provider.base_url}",
    )
    conversation.current_leaf = failed
    conversation.save(update_fields=["current_leaf"])
    share = _share(alice_client, conversation)

    def assert_private(html: str) -> None:
        # Static file names carry content hashes, which could hold any short digit string.
        html = re.sub(r"/static/[^\"']+", "/static/", html)
        private = [
            alice.username,
            alice.email,
            chat_model.provider.base_url,
            chat_model.provider.base_url.split("//")[1],
            chat_model.provider.api_key,
            str(chat_model.context_window),
            str(chat_model.max_output_tokens),
            str(conversation.id),
            conversation.id.hex,
            "987654321",
            "987654322",
            "987654323",
            "data-message-id",
            "data-conversation",
        ]
        for value in private:
            assert value not in html, value

    anonymous = Client().get(_url(share)).content.decode()
    assert_private(anonymous)
    assert "SYSTEM-PROMPT-SECRET" not in anonymous
    assert "Is Q3 on track?" in anonymous and "Mostly." in anonymous
    assert "The provider answered with an error." in anonymous
    # Even the owner, signed in, sees a page without their own details.
    assert_private(alice_client.get(_url(share)).content.decode())

    # The system prompt appears only when the owner chose to include it.
    _share(alice_client, conversation, include_system_prompt="on")
    included = Client().get(_url(share)).content.decode()
    assert "SYSTEM-PROMPT-SECRET" in included
    assert_private(included)


# --- continue this conversation ---------------------------------------------------------------
def test_continue_copies_the_snapshot_into_the_viewers_account(alice_client, conversation):
    Conversation.objects.filter(id=conversation.id).update(system_prompt="Be brief.")
    share = _share(alice_client, conversation)
    add_turn(conversation, "not shared", "not shared either")
    carol = make_user("carol")
    carol_client = signed_in(carol)

    response = carol_client.post(reverse("share_continue", args=[share.token]))
    assert response.status_code == 302
    copy = Conversation.objects.get(owner=carol)
    assert response["Location"] == f"/c/{copy.id}/"
    assert copy.title == "Trip planning"
    assert copy.system_prompt == ""  # not included in the share
    assert copy.model_id == conversation.model_id

    originals = [Message.objects.get(id=i) for i in share.message_ids]
    copies = list(Message.objects.filter(conversation=copy).order_by("id"))
    assert len(copies) == len(originals) == 4
    for original, copied in zip(originals, copies, strict=True):
        for field in ("role", "content", "reasoning", "status", "model_name", "token_count"):
            assert getattr(copied, field) == getattr(original, field), field
        assert copied.id != original.id
    # The same shape: each copy follows the one before it, and the last is shown.
    assert [m.parent_id for m in copies] == [None] + [m.id for m in copies[:-1]]
    assert copy.current_leaf_id == copies[-1].id

    # Carol can chat on in her copy, which now carries the history.
    outcome = chat_services.message_send(user=carol, conversation_id=copy.id, content="And then?")
    assert outcome.plan is not None
    sent = [m["content"] for m in outcome.plan.request.messages]
    assert sent[-1] == "And then?" and "question 0" in sent and "answer 1" in sent
    # Alice's conversation is untouched.
    assert Message.objects.filter(conversation=conversation).count() == 6
    assert carol_client.get(f"/c/{copy.id}/").status_code == 200


def test_continue_needs_a_signed_in_viewer_and_a_live_link(alice_client, conversation):
    share = _share(alice_client, conversation)
    anonymous = Client().post(reverse("share_continue", args=[share.token]))
    assert anonymous.status_code == 302
    assert anonymous["Location"] == f"/accounts/login/?next=/s/{share.token}/"
    carol_client = signed_in(make_user("carol"))
    alice_client.post(reverse("share_revoke", args=[conversation.id]))
    assert carol_client.post(reverse("share_continue", args=[share.token])).status_code == 404
    assert Conversation.objects.count() == 1


def test_the_shared_page_offers_continue_only_to_signed_in_viewers(alice_client, conversation):
    share = _share(alice_client, conversation)
    anonymous = Client().get(_url(share)).content.decode()
    assert "Sign in to continue this conversation" in anonymous
    assert "<button" not in anonymous.split('class="shared-footer"')[1]
    member = signed_in(make_user("carol")).get(_url(share)).content.decode()
    assert "Continue this conversation</button>" in member


def test_continue_keeps_the_system_prompt_when_it_was_shared(alice_client, conversation):
    Conversation.objects.filter(id=conversation.id).update(system_prompt="Be brief.")
    conversation.refresh_from_db()
    share = _share(alice_client, conversation, include_system_prompt="on")
    carol = make_user("carol")
    signed_in(carol).post(reverse("share_continue", args=[share.token]))
    assert Conversation.objects.get(owner=carol).system_prompt == "Be brief."


# --- the conversation page offers it all --------------------------------------------------------
def test_the_conversation_header_has_share_and_export(alice_client, conversation):
    html = alice_client.get(f"/c/{conversation.id}/").content.decode()
    doc = Elements.of(html)
    assert doc.find("a", href=f"/c/{conversation.id}/export.md")
    assert doc.find("a", href=f"/c/{conversation.id}/export.json")
    assert doc.find("details", **{"hx-get": f"/c/{conversation.id}/share/"})
    assert doc.find("a", href="/shares/") and doc.find("a", href="/import/")
    assert "<summary>Share</summary>" in html and "<summary>Export</summary>" in html


def test_the_share_page_works_without_htmx(alice_client, conversation):
    page = alice_client.get(reverse("share_panel", args=[conversation.id]))
    assert page.status_code == 200 and "Create link" in page.content.decode()
    response = alice_client.post(reverse("share_save", args=[conversation.id]), share_form())
    assert response.status_code == 302
    assert response["Location"] == reverse("share_panel", args=[conversation.id])
    share = Share.objects.get(conversation=conversation)
    assert share.token in alice_client.get(response["Location"]).content.decode()
