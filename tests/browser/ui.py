"""What a user does on the chat page, in Playwright terms (accessible names first)."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from tests.browser.live_app import Account

CONVERSATION_URL = re.compile(r"/c/([0-9a-f-]{36})/$")


def sign_in(page: Page, account: Account) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(account.username)
    page.get_by_label("Password").fill(account.password)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    expect_ready(page)


def expect_ready(page: Page) -> None:
    """Wait until the chat page's script has started: it focuses the box when it has.

    Before that, Enter in the box would only add a new line."""
    expect(message_box(page)).to_be_focused()


def open_new_chat(page: Page) -> None:
    with page.expect_navigation():
        page.get_by_role("button", name="New chat").click()
    expect_ready(page)


def message_box(page: Page) -> Locator:
    # exact: the message list is a region labelled "Messages", which "Message" also matches.
    return page.get_by_label("Message", exact=True)


def sidebar(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Conversations")


def messages(page: Page) -> Locator:
    return page.locator("#messages article.message")


def replies(page: Page) -> Locator:
    return page.locator("#messages article.message--assistant")


def send(page: Page, text: str) -> None:
    """Type a message and press Enter, as a user does."""
    box = message_box(page)
    box.fill(text)
    box.press("Enter")


def wait_until_finished(reply: Locator, status: str = "complete") -> None:
    expect(reply).to_have_attribute("data-status", status)


def conversation_id(page: Page) -> str:
    expect(page).to_have_url(CONVERSATION_URL)
    match = CONVERSATION_URL.search(page.url)
    assert match is not None
    return match.group(1)


def start_conversation(page: Page, text: str) -> str:
    """From the new-chat page: send a first message, wait for the whole reply, return the id."""
    send(page, text)
    wait_until_finished(replies(page).last)
    return conversation_id(page)


def normalized(text: str) -> str:
    return " ".join(text.split())
