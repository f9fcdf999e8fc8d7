"""Usage accounting: one record per upstream call, daily roll-ups, in-flight reservations, and
the audit log of staff reading other people's conversations.

Records keep working when what they point at is deleted: every foreign key is SET_NULL and the
names are copied into the record. No message text is ever stored here.

The roll-ups are keyed by plain ids (0 for "none") rather than foreign keys, so deleting a user
or a team never touches them, and they are updated in the transaction that inserts the record,
so they always agree with the records (``manage.py usage_rebuild_rollups`` recomputes them).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Outcome(models.TextChoices):
    COMPLETE = "complete", "Complete"
    STOPPED = "stopped", "Stopped"
    INTERRUPTED = "interrupted", "Interrupted"
    ERROR = "error", "Error"


class CallKind(models.TextChoices):
    REPLY = "reply", "Reply"
    SUMMARY = "summary", "Summary"
    TITLE = "title", "Title"
    OTHER = "other", "Other"


class UsageRecord(models.Model):
    # What makes a call unique ("reply:<message id>" for replies): inserting a record twice for
    # one call is a no-op, which makes recording exactly-once across retries and crashes.
    call_id = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=CallKind.choices, default=CallKind.REPLY)
    started_at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    username = models.CharField(max_length=150, blank=True)
    team = models.ForeignKey(
        "teams.Team",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    team_name = models.CharField(max_length=100, blank=True)
    conversation = models.ForeignKey(
        "conversations.Conversation",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    provider = models.ForeignKey(
        "providers.Provider",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    provider_name = models.CharField(max_length=100, blank=True)
    model = models.ForeignKey(
        "providers.ChatModel",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    model_name = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    # True when the provider reported no usage and the counts are our tokenizer's estimate.
    tokens_estimated = models.BooleanField(default=False)
    # The model's prices when the call was made (USD per million tokens), and the cost they gave.
    input_price_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    output_price_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    cost = models.DecimalField(max_digits=16, decimal_places=9, default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True, verbose_name="TTFT (ms)")
    duration_ms = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    error_kind = models.CharField(max_length=40, blank=True)
    retries = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["-started_at", "-id"], name="usage_recent"),
            # Filters of the admin list and the rate limits' last-minute counts.
            models.Index(fields=["user", "-started_at"], name="usage_user_time"),
            models.Index(fields=["team", "-started_at"], name="usage_team_time"),
            models.Index(fields=["model", "-started_at"], name="usage_model_time"),
            models.Index(fields=["provider", "-started_at"], name="usage_provider_time"),
            # "What failed": errors are few, and combine with the others (bitmap AND).
            models.Index(fields=["outcome", "-started_at"], name="usage_outcome_time"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.call_id} ({self.outcome})"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class DailyCounters(models.Model):
    day = models.DateField()
    team_key = models.BigIntegerField(default=0)  # teams.Team id, 0 for none
    calls = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=18, decimal_places=9, default=0)

    class Meta:
        abstract = True


class DailyModelUsage(DailyCounters):
    model_key = models.BigIntegerField(default=0)
    model_name = models.CharField(max_length=200, blank=True)
    provider_name = models.CharField(max_length=100, blank=True)
    team_name = models.CharField(max_length=100, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "team_key", "model_key"], name="daily_model_usage_key"
            )
        ]
        indexes = [models.Index(fields=["team_key", "day"], name="daily_model_team_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.model_name}: {self.calls} calls"


class DailyUserUsage(DailyCounters):
    user_key = models.BigIntegerField(default=0)
    username = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "team_key", "user_key"], name="daily_user_usage_key"
            )
        ]
        indexes = [
            models.Index(fields=["team_key", "day"], name="daily_user_team_day"),
            models.Index(fields=["user_key", "day"], name="daily_user_user_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.username}: {self.calls} calls"


class DailyConversationUsage(DailyCounters):
    conversation_key = models.UUIDField()
    user_key = models.BigIntegerField(default=0)
    username = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "team_key", "conversation_key"],
                name="daily_conversation_usage_key",
            )
        ]
        indexes = [
            # The days of one conversation (those crossing a range's edge).
            models.Index(fields=["conversation_key", "team_key", "day"], name="daily_conv_days")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.conversation_key}: {self.calls} calls"


class ConversationUsage(models.Model):
    """A conversation's usage per team it was charged to, over its whole life, with its first
    and last day. The top conversations of a date range come from here for conversations that
    lie wholly inside the range (their totals are the range's), and from the daily rows only
    for the few that cross its edges: a page then reads a few thousand rows, not every
    conversation of the range."""

    team_key = models.BigIntegerField(default=0)
    conversation_key = models.UUIDField()
    user_key = models.BigIntegerField(default=0)
    username = models.CharField(max_length=150, blank=True)
    first_day = models.DateField()
    last_day = models.DateField()
    calls = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=18, decimal_places=9, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team_key", "conversation_key"], name="conversation_usage_key"
            )
        ]
        indexes = [
            models.Index(fields=["-cost", "-tokens"], name="conv_usage_top"),
            models.Index(fields=["team_key", "-cost", "-tokens"], name="conv_usage_team_top"),
            models.Index(fields=["last_day", "first_day"], name="conv_usage_days"),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_key}: {self.calls} calls"


class DailyTtftHistogram(models.Model):
    """Time to first token per day, team and model, as counts in log-spaced buckets (see
    usage.histogram): percentiles over any range come from summing a few hundred rows."""

    day = models.DateField()
    team_key = models.BigIntegerField(default=0)
    model_key = models.BigIntegerField(default=0)
    bucket = models.SmallIntegerField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "team_key", "model_key", "bucket"], name="daily_ttft_key"
            )
        ]
        indexes = [models.Index(fields=["team_key", "day"], name="daily_ttft_team_day")]

    def __str__(self) -> str:
        return f"{self.day} model {self.model_key} bucket {self.bucket}: {self.count}"


class UsageReservation(models.Model):
    """A call in flight: what it may cost at most, counted against budgets until it settles
    (its record replaces it, in the same transaction)."""

    call_id = models.CharField(max_length=100, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(
        "teams.Team", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=9, default=0)
    # Kept so that a call whose process died can still be recorded with its estimate.
    estimated_prompt_tokens = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["user", "created_at"], name="reservation_user")]

    def __str__(self) -> str:
        return f"{self.call_id} (in flight)"


class ConversationReview(models.Model):
    """The audit log: one row each time staff opened someone else's conversation for review."""

    viewed_at = models.DateTimeField(default=timezone.now)
    viewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    viewer_name = models.CharField(max_length=150)
    conversation = models.ForeignKey(
        "conversations.Conversation",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    conversation_key = models.UUIDField()
    owner_name = models.CharField(max_length=150, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-viewed_at", "-id"]
        verbose_name = "conversation review (audit log)"
        verbose_name_plural = "conversation reviews (audit log)"

    def __str__(self) -> str:
        return f"{self.viewer_name} read {self.owner_name}'s conversation {self.conversation_key}"
