"""Teams, their members, the limits set on them, and which providers and models they may use.

A user may belong to several teams; each conversation is charged to one of them (or to none,
for users outside every team). Team admins manage their team from /teams/ without Django-admin
access; site staff manage everything.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Limits(models.Model):
    """Budgets and a request rate. An empty field means "no limit of its own" (see each owner)."""

    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    cost_per_day = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="USD"
    )
    cost_per_month = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="USD"
    )
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)

    LIMIT_FIELDS = (
        "tokens_per_day",
        "tokens_per_month",
        "cost_per_day",
        "cost_per_month",
        "requests_per_minute",
    )

    class Meta:
        abstract = True

    def limit_values(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.LIMIT_FIELDS}


class Team(Limits):
    """Empty limits fall back to the site's team defaults (settings.USAGE_DEFAULT_TEAM_LIMITS)."""

    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(Limits):
    """A user in a team. Its limits (set by the team's admins) cap this member's usage charged
    to the team; empty means the member has no cap of their own inside the team."""

    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        ADMIN = "admin", "Team admin"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")
        ]
        indexes = [models.Index(fields=["user", "created_at"], name="membership_user_first")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"

    @property
    def is_admin(self) -> bool:
        return self.role == self.Role.ADMIN


class UserLimits(Limits):
    """A user's own limits over all their usage, set by staff. Empty fields fall back to the
    site's user defaults (settings.USAGE_DEFAULT_USER_LIMITS). The row is also what concurrent
    sends of one user lock, so that budgets hold under concurrency."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_limits"
    )

    class Meta:
        verbose_name = "user limits"
        verbose_name_plural = "user limits"

    def __str__(self) -> str:
        return f"Limits of {self.user}"


class ProviderAccess(models.Model):
    """A provider restricted to some teams. Without a row, every team may use it."""

    provider = models.OneToOneField(
        "providers.Provider", on_delete=models.CASCADE, related_name="team_access"
    )
    teams = models.ManyToManyField(Team, blank=True, related_name="providers_allowed")

    class Meta:
        verbose_name = "provider restricted to teams"
        verbose_name_plural = "providers restricted to teams"

    def __str__(self) -> str:
        return f"{self.provider} (some teams only)"


class ModelAccess(models.Model):
    """A model restricted to some teams. Without a row, every team may use it (if its
    provider is available to them)."""

    chat_model = models.OneToOneField(
        "providers.ChatModel", on_delete=models.CASCADE, related_name="team_access"
    )
    teams = models.ManyToManyField(Team, blank=True, related_name="models_allowed")

    class Meta:
        verbose_name = "model restricted to teams"
        verbose_name_plural = "models restricted to teams"

    def __str__(self) -> str:
        return f"{self.chat_model} (some teams only)"
