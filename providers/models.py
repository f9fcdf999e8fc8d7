"""Upstream providers and the models they serve, as configured by admins (or from OPENAI_*)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from providers.client import ProviderConfig


class ContextStrategy(models.TextChoices):
    """What the history service does with turns that no longer fit a model's window."""

    SUMMARIZE = "summarize", "Summarize earlier messages"
    DROP = "drop", "Leave out earlier messages"


class Provider(models.Model):
    class Source(models.TextChoices):
        ADMIN = "admin", "Added by an admin"
        ENVIRONMENT = "env", "From OPENAI_* environment variables"
        LOCAL = "local", "Bundled local demo model"

    name = models.CharField(max_length=100, unique=True)
    base_url = models.URLField(
        max_length=500, help_text="Up to and including the version, e.g. https://api.openai.com/v1"
    )
    # Write-only in the admin: never rendered back into a page, never sent to a browser.
    api_key = models.CharField(max_length=500, blank=True)
    extra_headers = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.ADMIN)
    connect_timeout = models.FloatField(default=10.0)
    first_byte_timeout = models.FloatField(default=60.0)
    idle_timeout = models.FloatField(default=60.0)
    total_timeout = models.FloatField(default=600.0)
    max_retries = models.PositiveSmallIntegerField(default=2)
    include_usage = models.BooleanField(
        default=True, help_text="Ask for usage in the stream (stream_options.include_usage)."
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def to_config(self) -> ProviderConfig:
        return ProviderConfig(
            base_url=self.base_url.rstrip("/"),
            api_key=self.api_key,
            extra_headers=dict(self.extra_headers or {}),
            connect_timeout=self.connect_timeout,
            first_byte_timeout=self.first_byte_timeout,
            idle_timeout=self.idle_timeout,
            total_timeout=self.total_timeout,
            max_retries=self.max_retries,
            include_usage=self.include_usage,
        )


class ChatModel(models.Model):
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=200, help_text="The model id the provider expects.")
    display_name = models.CharField(max_length=200, blank=True)
    context_window = models.PositiveIntegerField(default=8192)
    max_output_tokens = models.PositiveIntegerField(default=1024)
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(
        default=False, help_text="Used for new conversations when the user picks nothing."
    )
    # Blank: the site default (CHAT_CONTEXT_STRATEGY); a conversation may choose its own.
    context_strategy = models.CharField(
        max_length=10, choices=ContextStrategy.choices, blank=True, default=""
    )
    use_for_summaries = models.BooleanField(
        default=False,
        help_text="Writes the summaries of earlier messages for every conversation "
        "(otherwise each conversation's own model does).",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["provider__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "name"], name="unique_model_per_provider")
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        return self.display_name or self.name
