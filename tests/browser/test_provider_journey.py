"""An admin connects a provider from a preset and fetches its models; a user picks one of them for
a conversation, sets a parameter and chats. Real Chromium, the app under daphne, the fake
upstream standing in for the admin's local server."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.live_app import ADMIN, Account, LiveApp
from tests.browser.ui import (
    conversation_id,
    open_new_chat,
    replies,
    send,
    sign_in,
    wait_until_finished,
)
from tests.fake_upstream import FakeUpstream, Script

pytestmark = pytest.mark.browser

LOCAL_KEY = "sk-local-e2e-7731"
PROVIDER_NAME = "Team GPU box"


def admin_messages(page: Page):
    return page.locator("ul.messagelist li")


def test_admin_adds_a_provider_from_a_preset_and_a_user_chats_with_its_model(
    new_page, user: Account, fake: FakeUpstream, app: LiveApp
):
    # The admin's "local server": it answers only with the key the admin will type.
    fake.models = ["qwen3-8b", "llama-3.2-3b"]
    fake.api_key = LOCAL_KEY

    admin = new_page()
    sign_in(admin, Account(*ADMIN))
    admin.goto("/admin/providers/provider/")
    admin.get_by_role("link", name="Add from preset").click()
    expect(admin.get_by_role("heading", name="Add a provider from a preset")).to_be_visible()
    for name in ("ASI Cloud", "ASI-1 Mini", "SIATI", "T-Cloud AI Foundation Services", "OpenAI"):
        expect(admin.get_by_role("heading", name=name, exact=True)).to_be_visible()
    card = admin.locator(".preset-card").filter(
        has=admin.get_by_role("heading", name="Local server (llama.cpp, Ollama, vLLM)")
    )
    card.get_by_role("link", name="Use this preset").click()

    # The preset filled the form in; the admin points it at their own server.
    expect(admin.get_by_role("heading", name="Preset: Local server")).to_be_visible()
    base_url = admin.get_by_label("Base URL")
    expect(base_url).to_have_value("http://127.0.0.1:8080/v1")
    expect(admin.get_by_label("First-byte timeout (s)")).to_have_value("180.0")
    admin.get_by_label("Name").fill(PROVIDER_NAME)
    base_url.fill(fake.base_url)
    admin.get_by_label(re.compile("^API key")).fill(LOCAL_KEY)
    admin.get_by_role("button", name="Save and continue editing").click()
    notes = admin.locator("ul.messagelist")
    expect(notes).to_contain_text("was added successfully")
    expect(notes).to_contain_text("This preset has no fixed models: use Fetch models")

    admin.get_by_role("button", name="Test connection").click()
    expect(admin_messages(admin)).to_have_text(
        [f"{PROVIDER_NAME}: Connected to 127.0.0.1: 2 models available."]
    )
    admin.get_by_role("button", name="Fetch models").click()
    expect(admin_messages(admin)).to_have_text(
        [f"{PROVIDER_NAME} lists 2 models. Added and enabled: llama-3.2-3b, qwen3-8b."]
    )
    # The models are listed under the provider; the key is nowhere in the page.
    inline = admin.locator("#models-group")
    expect(inline.locator("input[value='qwen3-8b']")).to_have_count(1)
    assert LOCAL_KEY not in admin.content()
    assert fake.requests[-1].headers["authorization"] == f"Bearer {LOCAL_KEY}"
    [(stored_key, preset)] = app.query(
        "SELECT api_key, preset FROM providers_provider WHERE name = %s", (PROVIDER_NAME,)
    )
    assert (stored_key, preset) == (LOCAL_KEY, "local")

    # A user picks the new model for a new chat and sets a parameter.
    page = new_page()
    sign_in(page, user)
    open_new_chat(page)
    page.get_by_text("Settings", exact=False).first.click()
    picker = page.get_by_label("Model", exact=True)
    expect(picker.locator("optgroup", has_text="qwen3-8b")).to_have_attribute(
        "label", PROVIDER_NAME
    )
    picker.select_option(label="qwen3-8b (reasoning, JSON mode)")
    saved = page.get_by_role("status").filter(has_text="Saved")
    expect(saved).to_be_visible()
    expect(page.locator(".settings-summary-model")).to_have_text("qwen3-8b")
    page.get_by_label("Temperature").fill("9")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Temperature must be a number from 0 to 2.")).to_be_visible()
    expect(page.get_by_label("Temperature")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Temperature").fill("0.3")
    page.get_by_label("System prompt").fill("You are a terse assistant.")
    page.get_by_role("button", name="Save settings").click()
    expect(saved).to_be_visible()
    expect(page.get_by_label("Temperature")).to_have_value("0.3")

    fake.enqueue(Script.stream(["Hi ", "from ", "qwen."], reasoning=["The user greets me."]))
    send(page, "Hello there")
    reply = replies(page).first
    wait_until_finished(reply)
    expect(reply.locator(".message-body")).to_have_text("Hi from qwen.")
    expect(reply.locator(".message-author")).to_have_text("qwen3-8b")
    reasoning = reply.locator("details.reasoning")
    expect(reasoning.locator("summary")).to_have_text("Reasoning")
    expect(reasoning).not_to_have_attribute("open", re.compile(".*"))  # collapsed once done

    sent = fake.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {LOCAL_KEY}"
    assert sent.json["model"] == "qwen3-8b"
    assert sent.json["temperature"] == 0.3
    assert sent.json["messages"][0] == {"role": "system", "content": "You are a terse assistant."}
    for unset in ("top_p", "top_k", "seed", "stop", "response_format"):
        assert unset not in sent.json

    # The conversation remembers its model and settings; the panel now saves to it.
    cid = conversation_id(page)
    page.reload()
    expect(page.locator(".settings-summary-model")).to_have_text("qwen3-8b")
    assert app.query(
        "SELECT m.name, c.params->>'temperature' FROM conversations_conversation c"
        " JOIN providers_chatmodel m ON m.id = c.model_id WHERE c.id = %s",
        (cid,),
    ) == [("qwen3-8b", "0.3")]

    # The admin turns the model off: the conversation says so and offers the others.
    app.query(
        "UPDATE providers_chatmodel SET enabled = false WHERE name = %s"
        " AND provider_id = (SELECT id FROM providers_provider WHERE name = %s) RETURNING id",
        ("qwen3-8b", PROVIDER_NAME),
    )
    page.reload()
    alert = page.get_by_role("alert").filter(has_text="has been turned off by an admin")
    expect(alert).to_contain_text("qwen3-8b")
    expect(reply.locator(".message-body")).to_have_text("Hi from qwen.")  # history stays
    page.get_by_label("Model", exact=True).select_option(
        label="llama-3.2-3b (reasoning, JSON mode)"
    )
    expect(alert).to_have_count(0)
    send(page, "And now?")
    wait_until_finished(replies(page).nth(1))
    assert fake.requests[-1].json["model"] == "llama-3.2-3b"
