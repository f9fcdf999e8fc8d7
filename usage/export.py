"""The dashboard as CSV: the same numbers, from the same Dashboard object, as the page shows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from usage.selectors import Dashboard, Totals

HEADER = [
    "section",
    "day",
    "name",
    "calls",
    "errors",
    "error_rate",
    "prompt_tokens",
    "completion_tokens",
    "tokens",
    "cost_usd",
    "ttft_p50_ms",
    "ttft_p95_ms",
]


def _totals(totals: Totals) -> list[object]:
    return [
        totals.calls,
        totals.errors,
        f"{totals.error_rate:.4f}",
        totals.prompt_tokens,
        totals.completion_tokens,
        totals.tokens,
        f"{totals.cost:.6f}",
    ]


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def dashboard_rows(dashboard: Dashboard) -> Iterator[list[object]]:
    yield HEADER
    scope = dict(dashboard.scope.choices).get(dashboard.scope.selected, "")
    yield ["range", dashboard.start.isoformat(), f"to {dashboard.end.isoformat()} · {scope}"]
    yield ["totals", "", "", *_totals(dashboard.totals), "", ""]
    for series in dashboard.series:
        for day, tokens, cost in zip(dashboard.days, series.tokens, series.cost, strict=True):
            if tokens or cost:
                row = ["daily", day.isoformat(), series.label, "", "", "", "", ""]
                yield [*row, tokens, f"{cost:.6f}", "", ""]
    for row in dashboard.models:
        yield [
            "model",
            "",
            row.model_name,
            *_totals(row.totals),
            _ms(row.ttft_p50_ms),
            _ms(row.ttft_p95_ms),
        ]
    for row in dashboard.top_users:
        yield ["top_user", "", row.username, *_totals(row.totals), "", ""]
    for row in dashboard.top_conversations:
        name = f"{row.conversation_id} ({row.username})"
        yield ["top_conversation", "", name, *_totals(row.totals), "", ""]


def dashboard_csv(dashboard: Dashboard) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in dashboard_rows(dashboard):
        writer.writerow(row)
    return out.getvalue()
