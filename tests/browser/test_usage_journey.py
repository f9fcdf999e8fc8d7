"""A team admin opens the usage dashboard in Chromium after two members chatted, and sees the
totals and the chart (drawn by our own script under the page's strict CSP)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.live_app import Account, LiveApp
from tests.browser.ui import sign_in, start_conversation
from tests.fake_upstream import Script

pytestmark = pytest.mark.browser


def _team(app: LiveApp, name: str, admins: list[Account], members: list[Account]) -> int:
    [(team_id,)] = app.query(
        "INSERT INTO teams_team (name, created_at) VALUES (%s, now()) RETURNING id", (name,)
    )
    for role, accounts in (("admin", admins), ("member", members)):
        for account in accounts:
            app.query(
                "INSERT INTO teams_membership (team_id, user_id, role, created_at)"
                " SELECT %s, id, %s, now() FROM auth_user WHERE username = %s RETURNING id",
                (team_id, role, account.username),
            )
    return team_id


def test_a_team_admin_sees_the_chart_and_totals_after_two_members_chat(
    new_page, app: LiveApp, fake
):
    admin, first, second = app.create_user("lead"), app.create_user("dev"), app.create_user("dev")
    _team(app, "Platform", [admin], [first, second])
    # Priced, so that the cost chart has bars too: $2 and $6 per million tokens.
    app.query(
        "UPDATE providers_chatmodel SET input_price_per_mtok = 2, output_price_per_mtok = 6"
        " RETURNING id"
    )

    usage = {"prompt_tokens": 1000, "completion_tokens": 250, "total_tokens": 1250}
    for account in (first, second):
        fake.enqueue(Script.stream(["Sure", ", here it is."], usage=usage))
        page = new_page()
        sign_in(page, account)
        start_conversation(page, f"Hello from {account.username}")

    page: Page = new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    sign_in(page, admin)
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()

    totals = page.get_by_role("region", name="Totals")
    expect(totals.locator('[data-total="calls"] .total-value')).to_have_text("2")
    expect(totals.locator('[data-total="tokens"] .total-value')).to_have_text("2,500")
    expect(totals.locator('[data-total="cost"] .total-value')).to_have_text("$0.0070")
    expect(totals.locator('[data-total="errors"] .total-value')).to_have_text("0")

    tokens_chart = page.locator('figure[data-metric="tokens"]')
    expect(tokens_chart.locator("svg rect")).to_have_count(1)  # today, one model
    expect(tokens_chart.locator(".chart-legend")).to_contain_text("fake-model (2,500)")
    expect(page.locator('figure[data-metric="cost"] svg rect')).to_have_count(1)

    # Stacked by user: one bar segment per member today.
    page.get_by_label("Stack").select_option("user")
    page.get_by_role("button", name="Show").click()
    expect(tokens_chart.locator("svg rect")).to_have_count(2)
    legend = tokens_chart.locator(".chart-legend")
    expect(legend).to_contain_text(f"{first.username} (1,250)")
    expect(legend).to_contain_text(f"{second.username} (1,250)")

    users = page.get_by_role("region", name="Top users")
    expect(users.get_by_role("row")).to_have_count(3)  # header and the two members
    assert "Hello from" not in page.content()  # usage, not content
    assert violations == []


def test_a_member_deactivated_in_the_admin_loses_the_chat_at_once(new_page, app: LiveApp, fake):
    from tests.browser.live_app import ADMIN
    from tests.browser.ui import replies, send

    member = app.create_user("leaver")
    page: Page = new_page()
    sign_in(page, member)
    fake.enqueue(Script.tokens(n=3000, delay=0.02))
    send(page, "Write a very long story")
    expect(replies(page).first.locator("[data-stream-content]")).to_contain_text("tok3 ")

    admin_page: Page = new_page()
    admin_page.goto("/admin/login/")
    admin_page.get_by_label("Username").fill(ADMIN[0])
    admin_page.get_by_label("Password").fill(ADMIN[1])
    admin_page.get_by_role("button", name="Log in").click()
    [(user_id,)] = app.query("SELECT id FROM auth_user WHERE username = %s", (member.username,))
    admin_page.goto(f"/admin/auth/user/{user_id}/change/")
    admin_page.get_by_label("Active").uncheck()
    admin_page.get_by_role("button", name="Save", exact=True).click()
    expect(admin_page.locator(".messagelist")).to_contain_text("was changed successfully")

    # The member's open page is told at once, and the reply is stopped and kept.
    expect(page.get_by_role("alert").filter(has_text="deactivated")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    assert fake.wait_for_disconnect(timeout=10), "the upstream request was not closed"
    stored: list[tuple] = []
    for _ in range(100):  # the reply's final write follows the upstream's close
        stored = app.query(
            "SELECT m.status, u.outcome FROM conversations_message m"
            " JOIN usage_usagerecord u ON u.call_id = 'reply:' || m.id"
            " JOIN conversations_conversation c ON c.id = m.conversation_id"
            " JOIN auth_user a ON a.id = c.owner_id"
            " WHERE a.username = %s AND m.role = 'assistant'",
            (member.username,),
        )
        if stored:
            break
        page.wait_for_timeout(100)
    assert stored == [("stopped", "stopped")]
    page.reload()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
