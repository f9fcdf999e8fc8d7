"""Reads for the usage dashboard and its CSV: everything is aggregated in the database from
the daily roll-ups (a few rows per day, team and model/user/conversation), so a page costs
about the same whether the records number thousands or millions.

Who sees what: staff see every team (and usage outside teams); team admins see only the teams
they administer; anyone else is refused (PermissionDenied, a 403 page).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import F, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from conversations.models import Conversation
from teams.models import Team
from teams.selectors import TeamNotFound, teams_managed_by
from usage.histogram import percentile
from usage.models import (
    ConversationUsage,
    DailyConversationUsage,
    DailyModelUsage,
    DailyTtftHistogram,
    DailyUserUsage,
)

DEFAULT_DAYS = 30
MAX_DAYS = 366
STACKED_SERIES = 8  # the largest series are drawn; the rest are summed as "Other"
TOP_ROWS = 10
NO_TEAM = "none"


@dataclass(frozen=True)
class Scope:
    """The teams a viewer asked for and may see. ``team_keys`` None means every team and
    usage outside teams (staff only); 0 stands for "no team"."""

    team_keys: list[int] | None
    choices: list[tuple[str, str]]
    selected: str


def usage_scope_for(*, user: Any, team: str | None) -> Scope:
    if not user.is_authenticated or not user.is_active:
        raise PermissionDenied
    managed = list(teams_managed_by(user=user).order_by("name").values_list("id", "name"))
    if user.is_staff:
        choices = [("", "All teams"), (NO_TEAM, "No team")]
        choices += [(str(team_id), name) for team_id, name in managed]
        if not team:
            return Scope(None, choices, "")
        if team == NO_TEAM:
            return Scope([0], choices, NO_TEAM)
    else:
        if not managed:
            raise PermissionDenied("Usage reports are for team admins and site staff.")
        choices = [(str(team_id), name) for team_id, name in managed]
        if len(managed) > 1:
            choices.insert(0, ("", "All my teams"))
        if not team:
            return Scope([team_id for team_id, _ in managed], choices, choices[0][0])
    ids = {str(team_id) for team_id, _ in managed}
    if team not in ids:
        raise TeamNotFound
    return Scope([int(team)], choices, team)


@dataclass(frozen=True)
class Totals:
    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class Series:
    label: str
    tokens: list[int]
    cost: list[Decimal]


@dataclass(frozen=True)
class UserRow:
    user_key: int
    username: str
    totals: Totals


@dataclass(frozen=True)
class ConversationRow:
    conversation_id: UUID
    username: str
    totals: Totals
    exists: bool


@dataclass(frozen=True)
class ModelRow:
    model_key: int
    model_name: str
    provider_name: str
    totals: Totals
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


@dataclass(frozen=True)
class Dashboard:
    start: date
    end: date
    stack: str
    scope: Scope
    totals: Totals
    days: list[date]
    series: list[Series]
    top_users: list[UserRow]
    top_conversations: list[ConversationRow]
    models: list[ModelRow] = field(default_factory=list)

    def chart_data(self) -> dict[str, object]:
        """The charts' input, passed to static/js/usage-charts.js as JSON."""
        return {
            "days": [day.isoformat() for day in self.days],
            "stack": self.stack,
            "series": [
                {
                    "label": series.label,
                    "tokens": series.tokens,
                    "cost": [float(value) for value in series.cost],
                }
                for series in self.series
            ],
        }


def default_range(today: date | None = None) -> tuple[date, date]:
    today = today or timezone.localdate()
    return today - timedelta(days=DEFAULT_DAYS - 1), today


_SUMS = {
    "calls_sum": Sum("calls"),
    "errors_sum": Sum("errors"),
    "prompt_sum": Sum("prompt_tokens"),
    "completion_sum": Sum("completion_tokens"),
    "cost_sum": Sum("cost"),
}


def _totals(row: dict[str, Any]) -> Totals:
    return Totals(
        calls=row["calls_sum"] or 0,
        errors=row["errors_sum"] or 0,
        prompt_tokens=row["prompt_sum"] or 0,
        completion_tokens=row["completion_sum"] or 0,
        cost=Decimal(row["cost_sum"] or 0),
    )


def _scoped(model: type, start: date, end: date, scope: Scope) -> QuerySet[Any]:
    rows = model.objects.filter(day__gte=start, day__lte=end)
    if scope.team_keys is not None:
        rows = rows.filter(team_key__in=scope.team_keys)
    return rows


def _stacked(
    days: list[date],
    per_key: dict[object, dict[date, tuple[int, Decimal]]],
    labels: dict[object, str],
    day_totals: dict[date, tuple[int, Decimal]],
) -> list[Series]:
    """The top keys as series, plus "Other" for what they leave of each day's total."""
    series = []
    shown_tokens = dict.fromkeys(days, 0)
    shown_cost = dict.fromkeys(days, Decimal(0))
    for key, values in per_key.items():
        tokens = [values.get(day, (0, Decimal(0)))[0] for day in days]
        cost = [values.get(day, (0, Decimal(0)))[1] for day in days]
        for day, t, c in zip(days, tokens, cost, strict=True):
            shown_tokens[day] += t
            shown_cost[day] += c
        series.append(Series(labels[key], tokens, cost))
    other_tokens = [day_totals.get(day, (0, 0))[0] - shown_tokens[day] for day in days]
    other_cost = [Decimal(day_totals.get(day, (0, 0))[1]) - shown_cost[day] for day in days]
    if any(other_tokens) or any(other_cost):
        series.append(Series("Other", other_tokens, other_cost))
    return series


def _top_conversations(start: date, end: date, scope: Scope) -> list[ConversationRow]:
    """The conversations that cost the most in the range (then used the most tokens).

    Exact, without adding up every conversation of the range: one that lies wholly inside the
    range has its lifetime totals as the range's (ConversationUsage, read in index order), and
    only the few that cross the range's edges have their days in the range added up."""
    totals = ConversationUsage.objects.all()
    if scope.team_keys is not None:
        totals = totals.filter(team_key__in=scope.team_keys)
    inside = totals.filter(first_day__gte=start, last_day__lte=end).order_by(
        "-cost", "-tokens", "conversation_key"
    )[:TOP_ROWS]
    candidates = [
        (row.cost, row.tokens, row.conversation_key, row.username, _totals_of(row))
        for row in inside
    ]
    crossing = totals.filter(
        Q(first_day__lt=start, last_day__gte=start) | Q(first_day__lte=end, last_day__gt=end)
    )

    def in_range(total: Any) -> Subquery:
        # Correlated, so each crossing conversation's days are read through the index.
        days = DailyConversationUsage.objects.filter(
            conversation_key=OuterRef("conversation_key"),
            team_key=OuterRef("team_key"),
            day__gte=start,
            day__lte=end,
        )
        return Subquery(
            days.order_by().values("conversation_key").annotate(total=total).values("total")
        )

    ranked = (
        crossing.annotate(
            range_cost=in_range(Sum("cost")),
            range_tokens=in_range(Sum("prompt_tokens") + Sum("completion_tokens")),
        )
        .order_by(
            F("range_cost").desc(nulls_last=True),
            F("range_tokens").desc(nulls_last=True),
            "conversation_key",
        )
        .values_list("team_key", "conversation_key")[:TOP_ROWS]
    )
    # (One that spans the whole range without a day in it has no sums and adds nothing.)
    top_crossing = list(ranked)
    if top_crossing:
        pairs = Q()
        for team_key, conversation_key in top_crossing:
            pairs |= Q(team_key=team_key, conversation_key=conversation_key)
        for row in (
            _scoped(DailyConversationUsage, start, end, scope)
            .filter(pairs)
            .values("team_key", "conversation_key")
            .annotate(**_SUMS, name=Max("username"))
            .annotate(tokens=F("prompt_sum") + F("completion_sum"))
            .order_by()
        ):
            candidates.append(
                (row["cost_sum"], row["tokens"], row["conversation_key"], row["name"], _totals(row))
            )
    candidates.sort(key=lambda c: (-(c[0] or 0), -(c[1] or 0), str(c[2])))
    candidates = candidates[:TOP_ROWS]
    existing = set(
        Conversation.objects.filter(id__in=[c[2] for c in candidates]).values_list("id", flat=True)
    )
    return [
        ConversationRow(key, name or "(deleted user)", row_totals, key in existing)
        for _, _, key, name, row_totals in candidates
    ]


def _totals_of(row: ConversationUsage) -> Totals:
    return Totals(
        calls=row.calls,
        errors=row.errors,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost=Decimal(row.cost),
    )


@contextmanager
def short_queries() -> Iterator[None]:
    """A transaction in which PostgreSQL does not JIT-compile: these reads take milliseconds,
    but the planner's estimates for the correlated subqueries grow with the tables and cross
    the JIT threshold, whose compiling then costs more than the query itself."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")
        yield


def usage_dashboard(*, scope: Scope, start: date, end: date, stack: str = "model") -> Dashboard:
    """Everything the dashboard shows (and the CSV holds) for a date range, inclusive. Sync."""
    with short_queries():
        return _dashboard(scope=scope, start=start, end=end, stack=stack)


def _dashboard(*, scope: Scope, start: date, end: date, stack: str) -> Dashboard:
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    by_model = _scoped(DailyModelUsage, start, end, scope)
    by_user = _scoped(DailyUserUsage, start, end, scope)
    tokens_sum = Sum("prompt_tokens") + Sum("completion_tokens")

    totals = _totals(by_model.aggregate(**_SUMS))

    daily = {
        row["day"]: (row["tokens"] or 0, Decimal(row["cost"] or 0))
        for row in by_model.values("day").annotate(tokens=tokens_sum, cost=Sum("cost"))
    }

    model_rows = list(
        by_model.values("model_key")
        .annotate(**_SUMS, name=Max("model_name"), provider=Max("provider_name"))
        .annotate(tokens=F("prompt_sum") + F("completion_sum"))
        .order_by("-cost_sum", "-tokens", "model_key")
    )
    histograms: dict[int, dict[int, int]] = {}
    for row in (
        _scoped(DailyTtftHistogram, start, end, scope)
        .values("model_key", "bucket")
        .annotate(n=Sum("count"))
        .order_by()
    ):
        histograms.setdefault(row["model_key"], {})[row["bucket"]] = row["n"]
    models = [
        ModelRow(
            model_key=row["model_key"],
            model_name=row["name"] or "(deleted model)",
            provider_name=row["provider"] or "",
            totals=_totals(row),
            ttft_p50_ms=percentile(histograms.get(row["model_key"], {}), 0.5),
            ttft_p95_ms=percentile(histograms.get(row["model_key"], {}), 0.95),
        )
        for row in model_rows
    ]

    user_rows = list(
        by_user.values("user_key")
        .annotate(**_SUMS, name=Max("username"))
        .annotate(tokens=F("prompt_sum") + F("completion_sum"))
        .order_by("-cost_sum", "-tokens", "user_key")[:TOP_ROWS]
    )
    top_users = [
        UserRow(row["user_key"], row["name"] or "(deleted user)", _totals(row)) for row in user_rows
    ]

    top_conversations = _top_conversations(start, end, scope)

    if stack == "user":
        # Ranked by tokens over the range, like the chart's bars.
        keys = [
            row["user_key"]
            for row in by_user.values("user_key")
            .annotate(tokens=tokens_sum)
            .order_by("-tokens", "user_key")[:STACKED_SERIES]
        ]
        labels = dict(
            by_user.filter(user_key__in=keys)
            .values("user_key")
            .annotate(name=Max("username"))
            .values_list("user_key", "name")
        )
        rows = by_user.filter(user_key__in=keys).values("user_key", "day")
    else:
        stack = "model"
        keys = [row.model_key for row in sorted(models, key=lambda m: -m.totals.tokens)]
        keys = keys[:STACKED_SERIES]
        labels = {row.model_key: row.model_name for row in models}
        rows = by_model.filter(model_key__in=keys).values("model_key", "day")
    key_field = "user_key" if stack == "user" else "model_key"
    per_key: dict[object, dict[date, tuple[int, Decimal]]] = {key: {} for key in keys}
    for row in rows.annotate(tokens=tokens_sum, cost=Sum("cost")).order_by():
        per_key[row[key_field]][row["day"]] = (row["tokens"] or 0, Decimal(row["cost"] or 0))
    labels = {key: labels.get(key) or "(deleted)" for key in keys}

    return Dashboard(
        start=start,
        end=end,
        stack=stack,
        scope=scope,
        totals=totals,
        days=days,
        series=_stacked(days, per_key, labels, daily),
        top_users=top_users,
        top_conversations=top_conversations,
        models=models,
    )


def team_usage_this_month(*, team: Team) -> dict[int, Totals]:
    """Each member's usage charged to the team this month, by user id (for the team page)."""
    today = timezone.localdate()
    rows = (
        DailyUserUsage.objects.filter(team_key=team.pk, day__gte=today.replace(day=1))
        .values("user_key")
        .annotate(**_SUMS)
    )
    return {row["user_key"]: _totals(row) for row in rows}
