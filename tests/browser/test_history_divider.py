"""Long conversations in Chromium: the summarizing notice, the divider where the model's view
begins, reading the summary, the same after a reload, and choosing to leave turns out instead."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from playwright.sync_api import Page, expect

from conversations.summaries import INSTRUCTIONS
from tests.browser import live_app
from tests.browser.live_app import LiveApp
from tests.browser.ui import expect_ready, replies, send, sign_in, wait_until_finished
from tests.fake_upstream import FakeUpstream, Script

# Seeds a conversation too long for a 1,000-token model, in a process of its own: the browser
# tests never use the ORM in the test thread (see conftest.py).
SEED = """
import json
from django.contrib.auth import get_user_model
from conversations.models import Conversation, Message
from conversations.tokens import message_tokens
from providers.models import ChatModel, Provider

args = json.loads('''{args}''')
owner = get_user_model().objects.get(username=args["username"])
provider = Provider.objects.create(
    name="Small window " + args["username"], base_url=args["base_url"], max_retries=0
)
model = ChatModel.objects.create(
    provider=provider, name="small-model", context_window=1000, max_output_tokens=200
)
conversation = Conversation.objects.create(
    owner=owner, model=model, title="A long chat", system_prompt="Be brief."
)
parent = None
for turn in range(14):
    for role in ("user", "assistant"):
        text = f"{{role}} turn {{turn}}: " + "details about the plan " * 12
        parent = Message.objects.create(
            conversation=conversation, parent=parent, role=role, content=text,
            token_count=message_tokens(text),
        )
conversation.current_leaf = parent
conversation.save()
print(conversation.id)
"""

SUMMARY = "**Decisions so far:** the plan has fourteen parts; the user wants brief answers."


def _seed_long_conversation(app: LiveApp, fake: FakeUpstream, username: str) -> str:
    env = live_app._environment(app.dsn, app.log_path.parent, fake.base_url)
    code = SEED.format(args=json.dumps({"username": username, "base_url": fake.base_url}))
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=live_app.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _answer(body: dict) -> Script:
    if body["messages"][0]["content"].startswith(INSTRUCTIONS[:60]):
        # Slow enough for a person (and the test) to see the notice.
        return Script.stream([SUMMARY], first_delay=1.0)
    return Script.stream(["Noted", "."])


def test_the_divider_shows_the_summary_and_survives_a_reload(
    page: Page, user, fake: FakeUpstream, app: LiveApp
):
    conversation = _seed_long_conversation(app, fake, user.username)
    fake.responder = _answer
    sign_in(page, user)
    page.goto(f"/c/{conversation}/")
    expect_ready(page)
    expect(page.locator("#context-divider")).to_have_count(0)

    send(page, "What did we decide?")
    expect(page.get_by_text("Summarizing earlier messages…")).to_be_visible()
    reply = replies(page).last
    wait_until_finished(reply)
    expect(reply.locator(".message-body")).to_have_text("Noted.")
    expect(page.get_by_text("Summarizing earlier messages…")).to_have_count(0)

    def check_divider() -> None:
        divider = page.get_by_role("note")
        expect(divider).to_contain_text(re.compile(r"\d+ earlier messages are summarized"))
        expect(divider).to_contain_text("The model sees the conversation from here on.")
        # It sits right above a user message: where the model's view begins.
        after = page.evaluate(
            "document.getElementById('context-divider').nextElementSibling.dataset.role"
        )
        assert after == "user"
        body = divider.locator(".context-summary-body")
        expect(body).to_be_hidden()
        divider.get_by_text("Read the summary").click()
        expect(body).to_be_visible()
        expect(body.locator("strong")).to_have_text("Decisions so far:")
        expect(body).to_contain_text("the user wants brief answers")

    check_divider()
    page.reload()
    expect_ready(page)
    check_divider()
    # Every stored message is still shown, above and below the divider.
    expect(page.locator("#messages article.message")).to_have_count(30)

    # This conversation can choose to leave earlier turns out instead.
    page.get_by_text("Long chats: summarize").click()
    page.get_by_label("When earlier messages no longer fit the model").select_option("drop")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("Saved: it applies from the next message.")).to_be_visible()
    expect(page.get_by_text("Long chats: leave out")).to_be_visible()

    requests_before = len(fake.requests)
    send(page, "And the next step?")
    wait_until_finished(replies(page).last)
    expect(page.get_by_role("note")).to_contain_text(
        re.compile(r"\d+ earlier messages were not sent")
    )
    expect(page.locator("#context-divider")).to_have_count(1)
    # No summary call this time: only the reply's request.
    assert len(fake.requests) == requests_before + 1
    assert SUMMARY not in json.dumps(fake.requests[-1].json)
