"""One reply seen live from several tabs, and through a connection that drops or loses a frame:
in real Chromium, against the app under daphne and the fake upstream."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.browser.ui import (
    conversation_id,
    expect_ready,
    normalized,
    replies,
    send,
    sign_in,
    wait_until_finished,
)
from tests.fake_upstream import Script

pytestmark = pytest.mark.browser

# Installed before the page's own script: keeps every socket the page opens, every frame it
# receives and sends (by socket), and the streamed text as it last was before the reply ended.
# window.__dropDelta = n makes the page lose its n-th reply.delta, as if the network had.
WATCH_SOCKETS = """(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__received = [];
  window.__sent = [];
  window.__dropped = [];
  window.__dropDelta = 0;
  let deltas = 0;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.__index = window.__sockets.length;
      window.__sockets.push(this);
    }
    send(data) {
      window.__sent.push({ socket: this.__index, frame: JSON.parse(data) });
      return super.send(data);
    }
    addEventListener(type, listener, options) {
      if (type !== "message") return super.addEventListener(type, listener, options);
      const filtered = (event) => {
        const frame = JSON.parse(event.data);
        if (frame.type === "reply.delta" && ++deltas === window.__dropDelta) {
          window.__dropped.push(frame);
          return;
        }
        window.__received.push({ socket: this.__index, frame });
        listener.call(this, event);
      };
      return super.addEventListener(type, filtered, options);
    }
  };
  document.addEventListener("DOMContentLoaded", () => {
    const messages = document.getElementById("messages");
    if (!messages) return;
    new MutationObserver(() => {
      const target = messages.querySelector(".message--assistant [data-stream-content]");
      if (target) window.__streamed = target.textContent;
    }).observe(messages, { childList: true, subtree: true, characterData: true });
  });
})();"""

STORED_REPLY = (
    "SELECT status, content FROM conversations_message"
    " WHERE conversation_id = %s AND role = 'assistant' ORDER BY id DESC LIMIT 1"
)


def _tokens(n: int) -> str:
    return "".join(f"tok{i} " for i in range(n))


def _last_token(text: str) -> int:
    found = re.findall(r"tok(\d+)", text)
    return int(found[-1]) if found else -1


def test_two_tabs_stream_the_same_reply_and_either_can_stop_it(page: Page, user, fake, app):
    fake.enqueue(Script.tokens(n=3000, delay=0.02))
    sign_in(page, user)
    send(page, "Tell me a very long story")
    reply = replies(page).first
    expect(reply.locator("[data-stream-content]")).to_contain_text("tok3 ")
    cid = conversation_id(page)

    other = page.context.new_page()  # a second tab of the same browser
    other.goto(f"/c/{cid}/")
    expect_ready(other)
    other_reply = replies(other).first
    expect(other_reply).to_have_attribute("data-status", "streaming")
    stream = other_reply.locator("[data-stream-content]")
    # Live in the second tab: text it did not have when it opened keeps arriving.
    seen = _last_token(stream.inner_text())
    expect(stream).to_contain_text(f"tok{seen + 10} ")

    other.get_by_role("button", name="Stop").click()
    wait_until_finished(other_reply, "stopped")
    wait_until_finished(reply, "stopped")
    for tab in (page, other):
        expect(tab.get_by_role("button", name="Stop")).to_be_hidden()
        expect(tab.get_by_role("button", name="Send")).to_be_visible()
    assert fake.wait_for_disconnect(timeout=5), "the upstream request was not closed"
    shown = normalized(reply.locator(".message-body").inner_text())
    assert normalized(other_reply.locator(".message-body").inner_text()) == shown
    status, content = app.query(STORED_REPLY, (uuid.UUID(cid),))[0]
    assert status == "stopped"
    assert normalized(content) == shown
    assert shown.startswith("tok0 tok1 ") and _last_token(shown) < 2999


def test_a_dropped_connection_resumes_with_no_gap_and_no_repeat(new_page, user, fake, app):
    page = new_page()
    page.add_init_script(WATCH_SOCKETS)
    sign_in(page, user)
    fake.enqueue(Script.tokens(n=150, delay=0.02))
    send(page, "Count for me")
    reply = replies(page).first
    expect(reply.locator("[data-stream-content]")).to_contain_text("tok10 ")

    page.evaluate("window.__sockets.at(-1).close()")  # the connection drops mid-reply
    expect(page.locator("#connection-status")).to_be_visible()
    wait_until_finished(reply)
    expect(page.locator("#connection-status")).to_be_hidden()

    assert page.evaluate("window.__sockets.length") == 2
    assert page.evaluate("window.__streamed") == _tokens(150)  # as streamed, before the end
    sent_again = [s["frame"] for s in page.evaluate("window.__sent") if s["socket"] == 1]
    resume = next(f for f in sent_again if f["type"] == "subscribe")
    received = page.evaluate("window.__received")
    before = [r["frame"] for r in received if r["socket"] == 0]
    after = [r["frame"] for r in received if r["socket"] == 1]
    held = [f for f in before if f["type"] == "reply.delta"][-1]["seq"]
    assert resume["seq"] == held
    # Only what it missed: a delta from where it was, never the whole text again.
    reply_frames = [f for f in after if f["type"] in ("reply.delta", "reply.snapshot")]
    assert reply_frames[0]["type"] == "reply.delta" and reply_frames[0]["from"] == held
    assert all(f["type"] == "reply.delta" for f in reply_frames)
    status, content = app.query(STORED_REPLY, (uuid.UUID(conversation_id(page)),))[0]
    assert (status, content) == ("complete", _tokens(150))


def test_a_lost_frame_is_noticed_and_filled_in(new_page, user, fake, app):
    page = new_page()
    page.add_init_script(WATCH_SOCKETS)
    sign_in(page, user)
    page.evaluate("window.__dropDelta = 5")
    fake.enqueue(Script.tokens(n=150, delay=0.02))
    send(page, "Count for me")
    reply = replies(page).first
    wait_until_finished(reply)

    dropped = page.evaluate("window.__dropped")
    assert len(dropped) == 1
    # The page saw the next frame did not follow on from what it held, and asked for the rest
    # from there.
    asked = [
        s["frame"]
        for s in page.evaluate("window.__sent")
        if s["frame"]["type"] == "subscribe" and s["frame"].get("seq") is not None
    ]
    assert asked and asked[0]["seq"] == dropped[0]["from"]
    assert page.evaluate("window.__streamed") == _tokens(150)  # no hole, nothing twice
    expect(reply.locator(".message-body")).to_have_text(_tokens(150).strip())
