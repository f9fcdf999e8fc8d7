"""Journeys through what people reach for daily: regenerate, edit and switch versions, continue,
search, archive and pin, copy and math, the theme and the phone layout. Real Chromium against
the app under daphne and the fake upstream; what the model was sent is read from the fake."""

from __future__ import annotations

import contextlib
import re
import uuid

import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import Error as PlaywrightError

from tests.browser.live_app import LiveApp
from tests.browser.ui import (
    message_box,
    messages,
    normalized,
    open_new_chat,
    replies,
    send,
    sidebar,
    sign_in,
    start_conversation,
    wait_until_finished,
)
from tests.fake_upstream import Script

pytestmark = pytest.mark.browser

CONTINUE_INSTRUCTION = (
    "Your previous reply was cut off by the length limit. Continue it exactly where it stopped, "
    "without repeating anything and without any preamble."
)
STORED = (
    "SELECT role, content, parent_id, id FROM conversations_message"
    " WHERE conversation_id = %s ORDER BY id"
)


def _sent(fake) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in fake.requests[-1].json["messages"]]


def _body(article) -> str:
    return normalized(article.locator(".message-body").inner_text())


def test_regenerate_keeps_both_versions_and_the_arrows_switch_between_them(
    page: Page, user, fake, app: LiveApp
):
    fake.enqueue(
        Script.stream(["Seven."]),
        Script.stream(["Forty", "-two", "."], delay=0.02),
    )
    sign_in(page, user)
    cid = start_conversation(page, "Pick a number")

    reply = replies(page).first
    reply.hover()
    reply.get_by_role("button", name="Regenerate").click()
    reply = replies(page).first
    wait_until_finished(reply)
    expect(replies(page)).to_have_count(1)
    expect(reply.locator(".message-body")).to_have_text("Forty-two.")
    expect(reply.locator(".branch-count")).to_contain_text("2 / 2")
    expect(reply.get_by_text("Version 2 of 2")).to_be_attached()
    # The model saw the question only, not the reply being replaced.
    assert _sent(fake) == [("user", "Pick a number")]

    reply.get_by_role("button", name="Previous version").click()
    expect(replies(page).first.locator(".message-body")).to_have_text("Seven.")
    expect(replies(page).first.locator(".branch-count")).to_contain_text("1 / 2")
    expect(replies(page).first.get_by_role("button", name="Previous version")).to_be_disabled()

    # The version shown is stored: a reload shows it too.
    page.reload()
    expect(replies(page)).to_have_count(1)
    expect(replies(page).first.locator(".message-body")).to_have_text("Seven.")
    stored = app.query(STORED, (uuid.UUID(cid),))
    assert [(role, content) for role, content, _, _ in stored] == [
        ("user", "Pick a number"),
        ("assistant", "Seven."),
        ("assistant", "Forty-two."),
    ]
    assert stored[1][2] == stored[2][2] == stored[0][3]


def test_edit_a_message_then_switch_back_to_the_original_branch(
    page: Page, user, fake, app: LiveApp
):
    fake.enqueue(
        Script.stream(["Paris."]),
        Script.stream(["Berlin."]),
        Script.stream(["Madrid."]),
    )
    sign_in(page, user)
    cid = start_conversation(page, "Capital of France?")
    send(page, "And of Germany?")
    wait_until_finished(replies(page).nth(1))

    # Up in the empty box edits the last message; Esc leaves it as it was.
    box = message_box(page)
    box.press("ArrowUp")
    editor = page.get_by_label("Edit message")
    expect(editor).to_have_value("And of Germany?")
    editor.press("Escape")
    expect(editor).to_have_count(0)

    question = messages(page).nth(2)
    question.hover()
    question.get_by_role("button", name="Edit message").click()
    editor = page.get_by_label("Edit message")
    expect(question.locator(".message-actions")).to_be_hidden()
    expect(question.locator(".message-body")).to_be_hidden()
    editor.fill("And of Spain?")
    page.get_by_role("button", name="Save and send").click()

    expect(messages(page)).to_have_count(4)
    wait_until_finished(replies(page).nth(1))
    expect(messages(page).nth(2).locator(".message-body")).to_have_text("And of Spain?")
    expect(replies(page).nth(1).locator(".message-body")).to_have_text("Madrid.")
    expect(messages(page).nth(2).locator(".branch-count")).to_contain_text("2 / 2")
    assert _sent(fake) == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "And of Spain?"),
    ]

    messages(page).nth(2).get_by_role("button", name="Previous version").click()
    expect(messages(page).nth(2).locator(".message-body")).to_have_text("And of Germany?")
    expect(replies(page).nth(1).locator(".message-body")).to_have_text("Berlin.")
    page.reload()
    expect(messages(page)).to_have_count(4)
    expect(messages(page).nth(2).locator(".message-body")).to_have_text("And of Germany?")
    expect(messages(page).nth(2).locator(".branch-count")).to_contain_text("1 / 2")
    assert len(app.query(STORED, (uuid.UUID(cid),))) == 6  # nothing was deleted


def test_continue_a_reply_cut_off_by_the_length_limit(page: Page, user, fake, app: LiveApp):
    fake.enqueue(
        Script.stream(["Once upon a time, ", "there was"], finish_reason="length"),
        Script.stream([" a fox", " who finished the story."], delay=0.02),
    )
    sign_in(page, user)
    cid = start_conversation(page, "Tell me a story")
    cut = replies(page).first
    expect(cut.locator(".message-note")).to_have_text("The reply reached the length limit.")

    cut.get_by_role("button", name="Continue the reply").click()
    expect(replies(page)).to_have_count(2)
    rest = replies(page).nth(1)
    wait_until_finished(rest)
    expect(rest).to_have_class(re.compile("message--continuation"))
    expect(rest.locator(".message-body")).to_have_text("a fox who finished the story.")
    expect(rest.get_by_text("(continued)")).to_be_visible()
    assert _sent(fake) == [
        ("user", "Tell me a story"),
        ("assistant", "Once upon a time, there was"),
        ("user", CONTINUE_INSTRUCTION),
    ]

    page.reload()
    expect(replies(page)).to_have_count(2)
    expect(page.get_by_role("button", name="Continue the reply")).to_have_count(0)
    stored = app.query(STORED, (uuid.UUID(cid),))
    assert stored[1][1] == "Once upon a time, there was"  # the cut reply is kept as it was
    assert stored[2][2] == stored[1][3]


def test_search_finds_my_messages_only_and_opens_the_one_found(new_page, app: LiveApp, fake):
    alice, bob = app.create_user("alice"), app.create_user("bob")
    bob_page = new_page()
    sign_in(bob_page, bob)
    fake.enqueue(Script.stream(["Bob's notes on the axolotl tank."]))
    start_conversation(bob_page, "Axolotl care for Bob")

    page = new_page()
    sign_in(page, alice)
    fake.enqueue(Script.stream(["Feed the axolotl twice a week."]))
    cid = start_conversation(page, "How often do I feed my pet?")
    open_new_chat(page)
    start_conversation(page, "Unrelated question")

    search = page.get_by_label("Search conversations")
    search.fill("axolo")
    with page.expect_navigation():
        search.press("Enter")
    results = page.locator("#search-results .result")
    expect(results).to_have_count(1)
    expect(results.first.locator("mark")).to_have_text("axolotl")
    expect(page.locator("#search-results")).not_to_contain_text("Bob")
    expect(page.locator("#search-results")).not_to_contain_text("tank")

    # Typing on the search page updates the results in place.
    page.get_by_label("Search your conversations").fill("unrelated")
    expect(page.locator("#search-results .result-title mark")).to_have_text("Unrelated")
    page.get_by_label("Search your conversations").fill("feed axolotl")
    expect(results).to_have_count(1)

    with page.expect_navigation():
        results.first.get_by_role("link").click()
    assert conversation_id_from(page.url) == cid
    target = replies(page).first
    expect(target).to_have_class(re.compile("is-target"))
    expect(target.locator(".message-body")).to_have_text("Feed the axolotl twice a week.")


def conversation_id_from(url: str) -> str:
    match = re.search(r"/c/([0-9a-f-]{36})/", url)
    assert match is not None, url
    return match.group(1)


def test_archive_pin_and_the_archive_page(page: Page, user, fake, app: LiveApp):
    sign_in(page, user)
    kept = start_conversation(page, "Weekly standup notes")
    open_new_chat(page)
    old = start_conversation(page, "Old migration project")

    page.get_by_role("button", name="Archive").click()
    expect(page.locator("#archived-badge")).to_have_text("Archived")
    entry = sidebar(page).locator(f'[data-conversation-id="{old}"]')
    expect(entry).to_have_count(0)
    assert app.query(
        "SELECT archived FROM conversations_conversation WHERE id = %s", (uuid.UUID(old),)
    ) == [(True,)]

    sidebar(page).get_by_role("link", name="Archive").click()
    listed = page.locator("#archive-list li")
    expect(listed).to_have_count(1)
    expect(listed.first).to_contain_text("Old migration project")

    # Search still finds archived conversations.
    page.get_by_label("Search conversations").fill("migration")
    with page.expect_navigation():
        page.get_by_label("Search conversations").press("Enter")
    expect(page.locator("#search-results .result").first).to_contain_text("Archived")

    page.goto("/archive/")
    with page.expect_navigation():
        page.get_by_role("button", name="Unarchive Old migration project").click()
    expect(page.get_by_text("Nothing is archived.")).to_be_visible()
    expect(sidebar(page).locator(f'[data-conversation-id="{old}"]')).to_have_count(1)

    # Pinned conversations come first.
    page.goto(f"/c/{kept}/")
    page.get_by_role("button", name="Pin").click()
    expect(page.get_by_role("button", name="Unpin")).to_be_visible()
    first = sidebar(page).locator(".sidebar-item").first
    expect(first).to_have_attribute("data-conversation-id", kept)
    expect(first).to_contain_text("Pinned")
    page.reload()
    expect(sidebar(page).locator(".sidebar-item").first).to_have_attribute(
        "data-conversation-id", kept
    )


MATH_AND_CODE = """The area is $\\pi r^2$, and

$$
\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}
$$

```python
print("<b>not bold</b>")
```
"""


def test_math_is_typeset_and_copy_buttons_copy_text(page: Page, user, fake):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    fake.enqueue(Script.stream([MATH_AND_CODE[i : i + 9] for i in range(0, len(MATH_AND_CODE), 9)]))
    sign_in(page, user)
    send(page, "Some maths please")
    reply = replies(page).first
    wait_until_finished(reply)

    expect(reply.locator(".math-inline .katex")).to_have_count(1)
    expect(reply.locator(".math-display .katex-display")).to_have_count(1)
    # Typeset from our own static files; nothing else was asked for.
    assert page.evaluate("typeof window.katex") == "object"

    reply.get_by_role("button", name="Copy code").click()
    assert page.evaluate("navigator.clipboard.readText()") == 'print("<b>not bold</b>")\n'
    expect(reply.locator(".codeblock b")).to_have_count(0)

    reply.get_by_role("button", name="Copy message").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "$\\pi r^2$" in copied and "\\frac{n(n+1)}{2}" in copied
    assert 'print("<b>not bold</b>")' in copied and "Copy code" not in copied

    page.reload()
    expect(replies(page).first.locator(".katex")).to_have_count(2)


def _background(page: Page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def test_the_theme_follows_the_system_and_the_toggle_is_remembered(
    browser: Browser, app: LiveApp, user, fake
):
    context = browser.new_context(base_url=app.url, color_scheme="dark")
    try:
        page = context.new_page()
        sign_in(page, user)
        toggle = page.get_by_role("button", name=re.compile("^Theme"))
        expect(toggle).to_have_text("Theme: System")
        dark = _background(page)
        assert dark != "rgb(255, 255, 255)"

        toggle.click()
        expect(toggle).to_have_text("Theme: Light")
        expect(page.locator("html")).to_have_attribute("data-theme", "light")
        assert _background(page) == "rgb(255, 255, 255)"

        # Remembered, and applied before the page's own scripts run.
        page.reload()
        expect(page.locator("html")).to_have_attribute("data-theme", "light")
        expect(toggle).to_have_text("Theme: Light")
        assert _background(page) == "rgb(255, 255, 255)"

        toggle.click()
        expect(toggle).to_have_text("Theme: Dark")
        assert _background(page) == dark
        toggle.click()
        expect(toggle).to_have_text("Theme: System")
        expect(page.locator("html")).not_to_have_attribute("data-theme", re.compile("."))
        assert _background(page) == dark
    finally:
        context.close()


def test_on_a_phone_the_sidebar_is_a_drawer(browser: Browser, app: LiveApp, user, fake):
    context = browser.new_context(base_url=app.url, viewport={"width": 390, "height": 760})
    try:
        page = context.new_page()
        sign_in(page, user)
        start_conversation(page, "From my phone")
        nav = sidebar(page)
        expect(nav).to_be_hidden()
        menu = page.get_by_role("button", name="Conversations")
        expect(menu).to_have_attribute("aria-expanded", "false")
        menu.click()
        expect(nav).to_be_visible()
        expect(menu).to_have_attribute("aria-expanded", "true")
        expect(nav.get_by_role("link", name="From my phone")).to_be_visible()
        page.keyboard.press("Escape")
        expect(nav).to_be_hidden()
        expect(menu).to_be_focused()
        # The composer fits the screen.
        box = message_box(page).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    finally:
        context.close()


def test_a_long_conversation_loads_older_messages_as_you_scroll_up(
    page: Page, user, fake, app: LiveApp
):
    sign_in(page, user)
    cid = start_conversation(page, "question 0")
    # 120 more messages, written straight into the database (a long history).
    parent = app.query(STORED, (uuid.UUID(cid),))[-1][3]
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        for index in range(1, 121):
            role = "user" if index % 2 else "assistant"
            parent = conn.execute(
                "INSERT INTO conversations_message (conversation_id, parent_id, depth, role,"
                " content, reasoning, status, finish_reason, error_kind, error, model_name,"
                " usage_estimated, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, '',"
                " 'complete', '', '', '', '', false, now(), now()) RETURNING id",
                (uuid.UUID(cid), parent, index + 1, role, f"{role} line {index}"),
            ).fetchone()[0]
        conn.execute(
            "UPDATE conversations_conversation SET current_leaf_id = %s WHERE id = %s",
            (parent, uuid.UUID(cid)),
        )

    page.reload()
    expect(messages(page)).to_have_count(40)
    expect(messages(page).last).to_contain_text("assistant line 120")
    expect(messages(page).filter(has_text="question 0")).to_have_count(0)
    # Scrolling up to the top brings the earlier ones, a page at a time, down to the first.
    more = page.get_by_role("button", name="Load earlier messages")
    shown = 40
    for _ in range(10):
        if not more.count():
            break
        # It may already have been seen, and replaced by the messages it loaded.
        with contextlib.suppress(PlaywrightError):
            more.first.scroll_into_view_if_needed()
        expect(messages(page)).not_to_have_count(shown)
        shown = messages(page).count()
    expect(messages(page)).to_have_count(122)
    expect(messages(page).first).to_contain_text("question 0")
    expect(more).to_have_count(0)
