"""Budgets and request rates, checked before anything is stored or sent upstream.

Three scopes, all checked on each send: the user (over all their usage; their UserLimits row,
else the site default), the team the conversation is charged to (the team's limits, else the
site's team default), and the user inside that team (the membership's limits, set by team
admins). Each may limit tokens per day and per month, cost per day and per month, and requests
per minute.

Under concurrency: ``limits_admit`` locks the user's limits row and the team row
(select_for_update) for the rest of the sending transaction, and counts the reservations of
calls in flight; the sending transaction then reserves its own call's maximum
(usage.services.usage_reserve) before it commits. Concurrent sends of one user therefore see
each other, and a budget is overshot by at most the one reply admitted while it still had room.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, DecimalField, IntegerField, Min, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from conversations.errors import ChatError
from teams.models import Limits, Membership, Team, UserLimits
from usage.models import DailyModelUsage, DailyUserUsage, UsageRecord, UsageReservation

KEEP_DRAFT = "Nothing was sent; your message is still in the box."

_NAMES = {
    "tokens_per_day": "daily token limit",
    "tokens_per_month": "monthly token limit",
    "cost_per_day": "daily cost limit",
    "cost_per_month": "monthly cost limit",
    "requests_per_minute": "rate limit",
}


class LimitReached(ChatError):
    """A send refused by a limit; the message says which, its size and when it resets."""

    def __init__(
        self, message: str, *, code: str, limit: str, scope: str, size: object, resets_at: datetime
    ) -> None:
        super().__init__(message, code=code)
        self.limit = limit
        self.scope = scope
        self.size = size
        self.resets_at = resets_at


def _effective(owner: Limits | None, defaults: dict[str, object] | None) -> dict[str, object]:
    """The limits in force: the owner's, else the default; 0 or empty means none."""
    values: dict[str, object] = {}
    for name in Limits.LIMIT_FIELDS:
        value = getattr(owner, name) if owner is not None else None
        if value is None and defaults is not None:
            value = defaults.get(name)
        if value:
            values[name] = value
    return values


def size_text(limit: str, value: object) -> str:
    if limit.startswith("tokens"):
        count = int(value)  # type: ignore[call-overload]
        period = "day" if limit.endswith("day") else "month"
        return f"{count:,} token{'' if count == 1 else 's'} per {period}"
    if limit.startswith("cost"):
        return f"${Decimal(value):,.2f} per {'day' if limit.endswith('day') else 'month'}"  # type: ignore[arg-type]
    return f"{value} requests per minute"


def _duration_text(delta: timedelta) -> str:
    seconds = max(1, int(delta.total_seconds()))
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{round(hours / 24)} days"


def _period_start(now: datetime, monthly: bool) -> datetime:
    local = timezone.localtime(now)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if monthly:
        start = start.replace(day=1)
    return start


def _period_end(now: datetime, monthly: bool) -> datetime:
    start = _period_start(now, monthly)
    if not monthly:
        # Via the date, not +24 h, so that a daylight-saving day still ends at midnight.
        following = (start + timedelta(days=1, hours=2)).date()
    else:
        following = (start + timedelta(days=32)).date().replace(day=1)
    return timezone.make_aware(datetime.combine(following, datetime.min.time()))


@dataclass
class _Scope:
    kind: str  # "user" | "team" | "membership"
    limits: dict[str, object]
    team: Team | None
    records: QuerySet[UsageRecord]
    reservations: QuerySet[UsageReservation]
    daily: QuerySet[Any]

    def refusal(self, limit: str, resets_at: datetime, now: datetime) -> LimitReached:
        name = _NAMES[limit]
        size = size_text(limit, self.limits[limit])
        if self.kind == "user":
            who = f"You have reached your {name} ({size})."
        elif self.kind == "membership":
            who = f"You have reached your {name} in the team “{self.team}” ({size})."
        else:
            who = f"The team “{self.team}” has reached its {name} ({size})."
        wait = _duration_text(resets_at - now)
        local = timezone.localtime(resets_at)
        zone = local.tzname() or ""
        if limit == "requests_per_minute":
            when = f"You can send again in {wait}."
        elif limit.endswith("day"):
            when = f"It resets at midnight ({local:%H:%M} {zone}), in {wait}."
        else:
            when = f"It resets on {local.day} {local:%B} at {local:%H:%M} {zone}, in {wait}."
        code = "rate_limited" if limit == "requests_per_minute" else "limit_reached"
        return LimitReached(
            f"{who} {when} {KEEP_DRAFT}",
            code=code,
            limit=limit,
            scope=self.kind,
            size=self.limits[limit],
            resets_at=resets_at,
        )

    def check(self, now: datetime) -> None:
        limits = self.limits
        if not limits:
            return
        rate = limits.get("requests_per_minute")
        if rate:
            window_start = now - timedelta(minutes=1)
            recent = self.records.filter(kind="reply", started_at__gte=window_start).aggregate(
                n=Count("id"), first=Min("started_at")
            )
            flying = self.reservations.filter(created_at__gte=window_start).aggregate(
                n=Count("id"), first=Min("created_at")
            )
            if recent["n"] + flying["n"] >= rate:  # type: ignore[operator]
                firsts = [t for t in (recent["first"], flying["first"]) if t is not None]
                resets_at = min(firsts) + timedelta(minutes=1) if firsts else now
                raise self.refusal("requests_per_minute", max(resets_at, now), now)
        budgets = [name for name in limits if name != "requests_per_minute"]
        if not budgets:
            return
        today = timezone.localdate(now)
        month_start = _period_start(now, monthly=True).date()
        zero_tokens = Value(0, output_field=IntegerField())
        zero_cost = Value(Decimal(0), output_field=DecimalField(max_digits=18, decimal_places=9))
        used = self.daily.filter(day__gte=month_start).aggregate(
            day_tokens=Coalesce(
                Sum("prompt_tokens", filter=Q(day=today))
                + Sum("completion_tokens", filter=Q(day=today)),
                zero_tokens,
            ),
            month_tokens=Coalesce(Sum("prompt_tokens") + Sum("completion_tokens"), zero_tokens),
            day_cost=Coalesce(Sum("cost", filter=Q(day=today)), zero_cost),
            month_cost=Coalesce(Sum("cost"), zero_cost),
        )
        flying = self.reservations.aggregate(
            tokens=Coalesce(Sum("tokens"), zero_tokens), cost=Coalesce(Sum("cost"), zero_cost)
        )
        spent = {
            "tokens_per_day": used["day_tokens"] + flying["tokens"],
            "tokens_per_month": used["month_tokens"] + flying["tokens"],
            "cost_per_day": used["day_cost"] + flying["cost"],
            "cost_per_month": used["month_cost"] + flying["cost"],
        }
        for name in budgets:
            # Refused once the budget is used up (in-flight calls included): a send with budget
            # left goes ahead, so a budget is overshot by at most the reply admitted last.
            if spent[name] >= limits[name]:
                monthly = name.endswith("month")
                raise self.refusal(name, _period_end(now, monthly), now)


def _lock_user_limits(user: Any) -> UserLimits:
    row = UserLimits.objects.select_for_update().filter(user=user).first()
    if row is None:
        UserLimits.objects.bulk_create([UserLimits(user=user)], ignore_conflicts=True)
        row = UserLimits.objects.select_for_update().get(user=user)
    return row


def limits_admit(*, user: Any, team: Team | None, now: datetime | None = None) -> None:
    """Refuse the send (LimitReached) when the user, their team or their membership in it is
    over a limit. Call inside the sending transaction, before anything is stored: the locks it
    takes are held until that transaction ends. Sync."""
    now = now or timezone.now()
    # Always in this order (user, then team) so that concurrent sends cannot deadlock.
    user_limits = _lock_user_limits(user)
    scopes = [
        _Scope(
            kind="user",
            limits=_effective(user_limits, settings.USAGE_DEFAULT_USER_LIMITS),
            team=None,
            records=UsageRecord.objects.filter(user=user),
            reservations=UsageReservation.objects.filter(user=user),
            daily=DailyUserUsage.objects.filter(user_key=user.pk),
        )
    ]
    if team is not None:
        team = Team.objects.select_for_update().get(pk=team.pk)
        membership = Membership.objects.filter(team=team, user=user).first()
        scopes.append(
            _Scope(
                kind="team",
                limits=_effective(team, settings.USAGE_DEFAULT_TEAM_LIMITS),
                team=team,
                records=UsageRecord.objects.filter(team=team),
                reservations=UsageReservation.objects.filter(team=team),
                daily=DailyModelUsage.objects.filter(team_key=team.pk),
            )
        )
        scopes.append(
            _Scope(
                kind="membership",
                limits=_effective(membership, None),
                team=team,
                records=UsageRecord.objects.filter(team=team, user=user),
                reservations=UsageReservation.objects.filter(team=team, user=user),
                daily=DailyUserUsage.objects.filter(team_key=team.pk, user_key=user.pk),
            )
        )
    for scope in scopes:
        scope.check(now)
