"""The usage dashboard, its CSV, the admin list's totals and the audited review, by role."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from tests.factories import make_chat_model, make_conversation, make_team, make_user
from usage.histogram import bucket_of, percentile
from usage.meter import UsageCall
from usage.models import ConversationReview, UsageRecord
from usage.services import call_context, usage_record_call, usage_rollups_rebuild

pytestmark = pytest.mark.django_db

_calls = iter(range(1, 10**6))


def record(
    user,
    team,
    model,
    *,
    prompt=100,
    completion=50,
    outcome="complete",
    days_ago=0,
    ttft=300,
    conversation=None,
):
    context = call_context(
        call_id=f"test:{next(_calls)}",
        kind="reply",
        user=user,
        team=team,
        conversation_id=conversation.id if conversation else None,
        model=model,
    )
    usage_record_call(
        call=UsageCall(
            context=context,
            started_at=timezone.now() - timedelta(days=days_ago),
            duration_ms=1000,
            ttft_ms=ttft if outcome != "error" else None,
            prompt_tokens=prompt,
            completion_tokens=completion,
            tokens_estimated=False,
            outcome=outcome,
            error_kind="server" if outcome == "error" else "",
        )
    )


@pytest.fixture
def world():
    """Two teams with an admin and a member each, staff, two priced models, and usage."""
    gpt = make_chat_model("http://127.0.0.1:9/v1", name="big-model")
    gpt.input_price_per_mtok, gpt.output_price_per_mtok = Decimal("10"), Decimal("30")
    gpt.save()
    small = make_chat_model("http://127.0.0.1:9/v1", name="small-model")
    ann, bob, sue, sam = (make_user(n) for n in ("ann", "bob", "sue", "sam"))
    staff = make_user("root", is_staff=True, is_superuser=True)
    research = make_team("Research", admins=(ann,), members=(bob,))
    sales = make_team("Sales", admins=(sue,), members=(sam,))
    bobs_chat = make_conversation(bob, model=gpt, title="Bob's secret merger plans", turns=1)
    record(bob, research, gpt, prompt=1000, completion=500, conversation=bobs_chat, ttft=200)
    record(bob, research, gpt, prompt=2000, completion=100, conversation=bobs_chat, ttft=400)
    record(ann, research, small, prompt=300, completion=30, outcome="error")
    record(ann, research, small, prompt=10, completion=10, days_ago=60)  # outside 30 days
    record(sam, sales, gpt, prompt=5000, completion=5000, ttft=900)
    record(staff, None, small, prompt=7, completion=3)
    return locals()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_totals(html: str) -> dict[str, str]:
    found = re.findall(
        r'data-total="(\w+)"><span class="total-label">\w+</span>'
        r'<span class="total-value">([^<]*)</span>',
        html,
    )
    return dict(found)


def csv_rows(client: Client, query: str = "") -> list[dict[str, str]]:
    response = client.get(f"/usage/export.csv{query}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_a_member_cannot_see_usage_or_manage_the_team(world):
    bob = client_for(world["bob"])
    assert bob.get("/usage/").status_code == 403
    assert bob.get("/usage/export.csv").status_code == 403
    assert bob.get(f"/teams/{world['research'].pk}/").status_code == 404
    # The chat page offers no link to it either.
    assert 'href="/usage/"' not in bob.get("/").content.decode()


def test_a_team_admin_sees_only_their_team(world):
    ann = client_for(world["ann"])
    html = ann.get("/usage/").content.decode()
    totals = page_totals(html)
    # Research in the last 30 days: 2 calls of Bob and 1 failed call of Ann.
    assert totals["calls"] == "3"
    assert totals["tokens"] == f"{1500 + 2100 + 330:,}"
    assert totals["errors"] == "1"
    assert "bob" in html and "ann" in html
    assert "sam" not in html and "Sales" not in html
    assert ann.get(f"/usage/?team={world['sales'].pk}").status_code == 404
    assert ann.get(f"/usage/export.csv?team={world['sales'].pk}").status_code == 404
    assert ann.get("/usage/?team=none").status_code == 404
    assert ann.get(f"/teams/{world['sales'].pk}/").status_code == 404
    assert ann.get(f"/teams/{world['research'].pk}/").status_code == 200


def test_staff_see_every_team_and_usage_outside_teams(world):
    root = client_for(world["staff"])
    totals = page_totals(root.get("/usage/").content.decode())
    assert totals["calls"] == "5"
    sales = page_totals(root.get(f"/usage/?team={world['sales'].pk}").content.decode())
    assert sales["calls"] == "1" and sales["tokens"] == "10,000"
    outside = page_totals(root.get("/usage/?team=none").content.decode())
    assert outside["calls"] == "1" and outside["tokens"] == "10"


def test_costs_come_from_the_prices_at_the_time_of_the_call(world):
    bob_first = UsageRecord.objects.filter(username="bob").order_by("id").first()
    assert bob_first.cost == Decimal("0.025")  # 1000 * $10/M + 500 * $30/M
    gpt = world["gpt"]
    gpt.input_price_per_mtok = Decimal("1000")
    gpt.save()
    bob_first.refresh_from_db()
    assert bob_first.cost == Decimal("0.025")


@pytest.mark.parametrize("stack", ["model", "user"])
def test_the_csv_holds_exactly_the_numbers_the_page_shows(world, stack):
    for user in (world["ann"], world["staff"]):
        client = client_for(user)
        response = client.get(f"/usage/?stack={stack}")
        html = response.content.decode()
        shown = page_totals(html)
        rows = csv_rows(client, f"?stack={stack}")
        [totals] = [row for row in rows if row["section"] == "totals"]
        assert f"{int(totals['calls']):,}" == shown["calls"]
        assert f"{int(totals['tokens']):,}" == shown["tokens"]
        assert f"{int(totals['errors']):,}" == shown["errors"]
        cost = Decimal(totals["cost_usd"])
        assert shown["cost"] in (f"${cost:,.2f}", f"${cost:,.4f}")
        # The chart's bars add up to the totals, and so do the CSV's daily rows.
        chart = response.context["chart_data"]
        assert sum(sum(s["tokens"]) for s in chart["series"]) == int(totals["tokens"])
        daily = [row for row in rows if row["section"] == "daily"]
        assert sum(int(row["tokens"]) for row in daily) == int(totals["tokens"])
        models = [row for row in rows if row["section"] == "model"]
        assert sum(int(row["calls"]) for row in models) == int(totals["calls"])
        for row in models:
            assert row["name"] in html


def test_the_chart_data_is_passed_as_json_not_as_script(world):
    html = client_for(world["staff"]).get("/usage/?stack=model").content.decode()
    block = re.search(r'<script id="usage-chart-data" type="application/json">(.*?)</script>', html)
    data = json.loads(block.group(1))
    assert len(data["days"]) == 30
    assert {s["label"] for s in data["series"]} == {"big-model", "small-model"}
    assert 'src="/static/js/usage-charts.js"' in html or "usage-charts" in html
    assert "onclick" not in html and " style=" not in html


def test_the_range_filters_days_and_a_bad_range_is_explained(world):
    root = client_for(world["staff"])
    today = timezone.localdate()
    old = (today - timedelta(days=60)).isoformat()
    totals = page_totals(root.get(f"/usage/?start={old}&end={old}").content.decode())
    assert totals["calls"] == "1"
    html = root.get(f"/usage/?start={today}&end={old}").content.decode()
    assert "The end date is before the start date." in html
    assert page_totals(html)["calls"] == "5"


def test_admins_see_usage_not_content(world):
    html = client_for(world["staff"]).get("/usage/").content.decode()
    assert "secret merger" not in html and "question 0" not in html
    assert "Review" not in html  # the review setting is off by default


def test_ttft_percentiles_per_model_come_from_the_histogram(world):
    rows = csv_rows(client_for(world["staff"]), f"?team={world['research'].pk}")
    big = next(row for row in rows if row["section"] == "model" and row["name"] == "big-model")
    # Two calls at 200 and 400 ms: the median lies between them.
    assert 200 <= float(big["ttft_p50_ms"]) <= 400
    assert float(big["ttft_p95_ms"]) <= 400 * 1.2


def test_histogram_percentiles_are_within_a_bucket_of_the_exact_value():
    values = [50 + 7 * i for i in range(1000)]  # 50 ms … 7043 ms, evenly
    counts: dict[int, int] = {}
    for value in values:
        counts[bucket_of(value)] = counts.get(bucket_of(value), 0) + 1
    for q in (0.5, 0.95):
        exact = sorted(values)[int(q * len(values)) - 1]
        assert abs(percentile(counts, q) - exact) / exact < 0.1


def test_rebuilding_the_rollups_gives_the_same_dashboard(world):
    root = client_for(world["staff"])
    before = csv_rows(root, "?stack=user")
    usage_rollups_rebuild()
    assert csv_rows(root, "?stack=user") == before


def test_the_admin_list_shows_the_totals_of_what_is_filtered(world):
    root = client_for(world["staff"])
    html = root.get(
        f"/admin/usage/usagerecord/?model__id__exact={world['gpt'].pk}"
    ).content.decode()
    assert re.search(r'data-total="calls">3<', html)
    assert re.search(r'data-total="tokens">13,600<', html)
    html = root.get("/admin/usage/usagerecord/?outcome__exact=error").content.decode()
    assert re.search(r'data-total="calls">1<', html)
    assert re.search(r'data-total="errors">1<', html)
    html = root.get(
        f"/admin/usage/usagerecord/?team__id__exact={world['sales'].pk}"
    ).content.decode()
    assert re.search(r'data-total="cost">\$0\.20<', html)  # 5000 * $10/M + 5000 * $30/M


def test_staff_review_is_off_by_default_and_audited_when_on(world, settings):
    root = client_for(world["staff"])
    chat = world["bobs_chat"]
    assert root.get(f"/usage/review/{chat.id}/").status_code == 404
    assert not ConversationReview.objects.exists()

    settings.USAGE_STAFF_CAN_READ_CONVERSATIONS = True
    assert client_for(world["ann"]).get(f"/usage/review/{chat.id}/").status_code == 404
    dashboard = root.get("/usage/").content.decode()
    assert f'href="/usage/review/{chat.id}/"' in dashboard
    response = root.get(f"/usage/review/{chat.id}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "audit log" in page
    assert "question 0" in page and "answer 0" in page  # the conversation, read-only
    [entry] = ConversationReview.objects.all()
    assert (entry.viewer_name, entry.owner_name, entry.conversation_key) == ("root", "bob", chat.id)
    audit = root.get("/admin/usage/conversationreview/").content.decode()
    assert str(chat.id) in audit and "bob" in audit


def test_top_conversations_of_any_range_match_adding_up_their_days(world):
    import random

    from django.db.models import Sum

    from usage.models import DailyConversationUsage
    from usage.selectors import usage_dashboard, usage_scope_for

    rng = random.Random(3)
    bob, research, gpt = world["bob"], world["research"], world["gpt"]
    chats = [make_conversation(bob, model=gpt) for _ in range(15)]
    for chat in chats:
        first = rng.randint(0, 12)
        for _ in range(rng.randint(1, 4)):
            record(
                bob,
                research,
                gpt,
                prompt=rng.randint(1, 5000),
                completion=rng.randint(1, 500),
                days_ago=first + rng.randint(0, 3),
                conversation=chat,
            )
    scope = usage_scope_for(user=world["staff"], team="")
    today = timezone.localdate()
    for first_day, last_day in [(15, 0), (5, 0), (9, 4), (2, 2), (14, 8)]:
        start, end = today - timedelta(days=first_day), today - timedelta(days=last_day)
        shown = usage_dashboard(scope=scope, start=start, end=end).top_conversations
        expected = list(
            DailyConversationUsage.objects.filter(day__gte=start, day__lte=end)
            .values("conversation_key")
            .annotate(cost=Sum("cost"), calls=Sum("calls"))
            .order_by("-cost")[:10]
        )
        assert [(r.conversation_id, r.totals.cost, r.totals.calls) for r in shown] == [
            (e["conversation_key"], e["cost"], e["calls"]) for e in expected
        ]
