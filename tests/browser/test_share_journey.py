"""Sharing, continuing, exporting and importing, in real Chromium against the app under daphne.

What is asserted is what people see (accessible names, text) and, where it matters, what was
stored."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.browser.live_app import LiveApp
from tests.browser.ui import (
    conversation_id,
    expect_ready,
    messages,
    replies,
    send,
    sidebar,
    sign_in,
    start_conversation,
    wait_until_finished,
)
from tests.fake_upstream import Script

pytestmark = pytest.mark.browser

SHARE_URL = re.compile(r"^http://127\.0\.0\.1:\d+/s/[A-Za-z0-9_-]{43}/$")
REPLY = "Lisbon in May.\n\n```python\nprint('boa viagem')\n```\n"


def _accept_dialogs(page: Page) -> list[str]:
    seen: list[str] = []

    def accept(dialog) -> None:
        seen.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    return seen


def _create_link(page: Page) -> str:
    """From a conversation page: open Share, create the link, return it."""
    page.locator("summary", has_text="Share").click()
    page.get_by_role("button", name="Create link").click()
    link = page.get_by_label("Link", exact=True)
    expect(link).to_have_value(SHARE_URL)
    return link.input_value()


def test_share_open_signed_out_revoke_and_the_link_is_gone(new_page, app: LiveApp, user, fake):
    fake.enqueue(Script.stream(["Lisbon ", "in May.\n\n", "```python\nprint('boa viagem')\n```\n"]))
    owner = new_page()
    owner.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(owner, user)
    cid = start_conversation(owner, "Where should the team offsite be?")
    expect(replies(owner).first.locator(".codeblock")).to_have_count(1)

    url = _create_link(owner)
    expect(owner.get_by_text("Viewed 0 times")).to_be_visible()
    owner.get_by_role("button", name="Copy link").click()
    expect(owner.get_by_role("button", name="Copied")).to_be_visible()
    assert owner.evaluate("navigator.clipboard.readText()") == url
    # A later message is not part of the snapshot.
    fake.enqueue(Script.stream(["Not shared."]))
    send(owner, "A private follow-up")
    wait_until_finished(replies(owner).nth(1))

    viewer = new_page()  # a fresh context: no session, no cookies
    response = viewer.goto(url)
    assert response is not None and response.status == 200
    assert response.headers["x-robots-tag"] == "noindex, nofollow"
    expect(viewer.get_by_role("heading", level=1)).to_have_text("Where should the team offsite be?")
    shown = viewer.locator("article.message")
    expect(shown).to_have_count(2)
    expect(shown.nth(0)).to_contain_text("Where should the team offsite be?")
    expect(shown.nth(1).locator(".codeblock[data-lang='python']")).to_contain_text("boa viagem")
    expect(viewer.get_by_text("A private follow-up")).to_have_count(0)
    expect(viewer.get_by_role("link", name="Sign in to continue this conversation")).to_be_visible()
    expect(viewer.locator("meta[name='robots']")).to_have_attribute("content", "noindex, nofollow")
    assert user.username not in viewer.content()
    assert cid not in viewer.content()

    # The owner finds it on the Shares page (from the sidebar footer) and revokes it.
    dialogs = _accept_dialogs(owner)
    owner.get_by_role("link", name="Shares").click()
    expect(owner.get_by_role("heading", level=1)).to_have_text("Shared links")
    row = owner.locator("tbody tr", has_text="Where should the team offsite be?")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(2)).to_have_text("Anyone with the link")
    expect(row.locator("td").nth(4)).to_have_text("1")  # views
    row.get_by_role("button", name=re.compile("^Revoke the link")).click()
    expect(row).to_have_count(0)
    assert dialogs and "not found" in dialogs[0]
    assert app.query("SELECT count(*) FROM sharing_share") == [(0,)]

    gone = viewer.goto(url)
    assert gone is not None and gone.status == 404
    expect(viewer.locator("article.message")).to_have_count(0)


def test_update_keeps_the_link_and_a_new_link_replaces_it(new_page, user, fake):
    owner = new_page()
    sign_in(owner, user)
    start_conversation(owner, "First question")
    url = _create_link(owner)

    fake.enqueue(Script.stream(["Second answer."]))
    send(owner, "Second question")
    wait_until_finished(replies(owner).nth(1))
    owner.locator("summary", has_text="Share").click()  # closes the menu
    owner.locator("summary", has_text="Share").click()  # opens it again
    owner.get_by_role("button", name="Update share").click()
    expect(owner.locator("#share-panel").get_by_role("status")).to_contain_text("Share updated")
    expect(owner.get_by_label("Link", exact=True)).to_have_value(url)

    viewer = new_page()
    viewer.goto(url)
    expect(viewer.locator("article.message")).to_have_count(4)
    expect(viewer.locator("article.message").nth(2)).to_contain_text("Second question")

    _accept_dialogs(owner)
    owner.get_by_role("button", name="Revoke and create a new link").click()
    expect(owner.locator("#share-panel").get_by_role("status")).to_contain_text(
        "the old one no longer works"
    )
    new_url = owner.get_by_label("Link", exact=True).input_value()
    assert SHARE_URL.match(new_url) and new_url != url
    assert viewer.goto(url).status == 404
    assert viewer.goto(new_url).status == 200


def test_a_signed_in_viewer_continues_the_conversation(new_page, app: LiveApp, fake):
    alice, bob = app.create_user("alice"), app.create_user("bob")
    owner = new_page()
    sign_in(owner, alice)
    fake.enqueue(Script.stream(["Use a list comprehension."]))
    start_conversation(owner, "How do I square numbers in Python?")
    url = _create_link(owner)

    viewer = new_page()
    viewer.goto(url)
    # Signing in from the shared page comes back to it.
    viewer.get_by_role("link", name="Sign in to continue this conversation").click()
    viewer.get_by_label("Username").fill(bob.username)
    viewer.get_by_label("Password").fill(bob.password)
    with viewer.expect_navigation():
        viewer.get_by_role("button", name="Sign in").click()
    expect(viewer).to_have_url(url)
    with viewer.expect_navigation():
        viewer.get_by_role("button", name="Continue this conversation").click()
    expect_ready(viewer)
    copy_id = conversation_id(viewer)
    expect(messages(viewer)).to_have_count(2)
    expect(
        sidebar(viewer).get_by_role("link", name="How do I square numbers in Python?")
    ).to_be_visible()

    fake.enqueue(Script.stream(["[x * x for x in numbers]"]))
    send(viewer, "Show me")
    wait_until_finished(replies(viewer).nth(1))
    sent = fake.requests[-1].json["messages"]
    assert [m["content"] for m in sent[-3:]] == [
        "How do I square numbers in Python?",
        "Use a list comprehension.",
        "Show me",
    ]
    owners = app.query(
        "SELECT u.username FROM conversations_conversation c JOIN auth_user u ON u.id = c.owner_id"
        " WHERE c.id = %s",
        (uuid.UUID(copy_id),),
    )
    assert owners == [(bob.username,)]
    # Alice's conversation did not change.
    assert app.query(
        "SELECT count(*) FROM conversations_message m JOIN conversations_conversation c"
        " ON c.id = m.conversation_id JOIN auth_user u ON u.id = c.owner_id WHERE u.username = %s",
        (alice.username,),
    ) == [(2,)]


def test_export_and_import_a_conversation(new_page, app: LiveApp, fake, tmp_path):
    alice = app.create_user("alice")
    page = new_page()
    sign_in(page, alice)
    fake.enqueue(Script.stream(["Olá 👋 — 你好 — مرحبا\n\n```js\nconsole.log(1)\n```"]))
    start_conversation(page, "Say hello in three scripts")

    page.locator("summary", has_text="Export").click()
    with page.expect_download() as markdown_download:
        page.get_by_role("link", name="Download as Markdown").click()
    markdown = markdown_download.value.path().read_text(encoding="utf-8")
    assert markdown.startswith("# Say hello in three scripts")
    assert "Olá 👋 — 你好 — مرحبا" in markdown and "console.log(1)" in markdown
    with page.expect_download() as json_download:
        page.get_by_role("link", name="Download as JSON").click()
    exported = tmp_path / json_download.value.suggested_filename
    json_download.value.save_as(exported)
    assert json.loads(exported.read_text(encoding="utf-8"))["format"] == "teamchat.conversation"

    # A broken file is refused with a message, and nothing is imported.
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "teamchat.conversation", "version": 1, "conversation": {')
    page.get_by_role("link", name="Import / export").click()
    page.get_by_label("Export file (JSON)").set_input_files(broken)
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid JSON")
    expect(page.get_by_role("alert")).to_contain_text("Nothing was imported")

    page.get_by_label("Export file (JSON)").set_input_files(exported)
    with page.expect_navigation():
        page.get_by_role("button", name="Import").click()
    expect_ready(page)
    shown = messages(page)
    expect(shown).to_have_count(2)
    expect(shown.nth(0)).to_contain_text("Say hello in three scripts")
    expect(shown.nth(1).locator(".codeblock[data-lang='js']")).to_contain_text("console.log(1)")
    expect(shown.nth(1)).to_contain_text("Olá 👋 — 你好 — مرحبا")
    assert app.query(
        "SELECT count(*) FROM conversations_conversation WHERE title = %s",
        ("Say hello in three scripts",),
    ) == [(2,)]
