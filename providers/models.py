"""Upstream providers and the models they serve, as configured by admins (or from OPENAI_*)."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from providers.client import ProviderConfig
from providers.params import MAX_TOKENS_KEYS, STANDARD_PARAMS


def standard_params() -> list[str]:
    # Referenced by migrations: keep the name.
    return list(STANDARD_PARAMS)


_positive_seconds = [MinValueValidator(0.1), MaxValueValidator(86_400)]


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
        "base URL",
        max_length=500,
        help_text="Up to and including the version, e.g. https://api.openai.com/v1",
    )
    # Write-only in the admin: never rendered back into a page, never sent to a browser.
    api_key = models.CharField(max_length=500, blank=True)
    extra_headers = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(
        default=True,
        help_text="A disabled provider's models are hidden from pickers; history stays readable.",
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.ADMIN)
    # The preset it was added from (providers.presets), which models fetched later follow.
    preset = models.CharField(max_length=40, blank=True, editable=False)
    connect_timeout = models.FloatField(
        "connect timeout (s)",
        default=10.0,
        validators=_positive_seconds,
        help_text="How long to wait for the connection to open.",
    )
    first_byte_timeout = models.FloatField(
        "first-byte timeout (s)",
        default=60.0,
        validators=_positive_seconds,
        help_text="How long to wait for the start of the answer after sending a request.",
    )
    idle_timeout = models.FloatField(
        "idle timeout (s)",
        default=60.0,
        validators=_positive_seconds,
        help_text="The longest silence allowed between two pieces of a streamed answer.",
    )
    total_timeout = models.FloatField(
        "total timeout (s)",
        default=600.0,
        validators=_positive_seconds,
        help_text="The longest a whole reply may take, retries included.",
    )
    max_retries = models.PositiveSmallIntegerField(
        default=2,
        validators=[MaxValueValidator(10)],
        help_text="Retries before the first token on connection errors, 408, 409, 429 and 5xx.",
    )
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
    context_window = models.PositiveIntegerField(
        default=8192,
        validators=[MinValueValidator(256)],
        help_text="Tokens the model reads per request, prompt and reply together.",
    )
    max_output_tokens = models.PositiveIntegerField(
        default=1024,
        validators=[MinValueValidator(1)],
        help_text="The longest reply. Sent as max_tokens unless a conversation sets less; "
        "at most half the context window is reserved for it.",
    )
    enabled = models.BooleanField(
        default=True,
        help_text="Disabled models are hidden from pickers; conversations with them stay readable.",
    )
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
    # Read by usage accounting: cost = tokens / 1e6 * price.
    input_price_per_mtok = models.DecimalField(
        "input price per million tokens (USD)",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
    )
    output_price_per_mtok = models.DecimalField(
        "output price per million tokens (USD)",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
    )
    default_params = models.JSONField(
        "default parameters",
        default=dict,
        blank=True,
        help_text='Sent unless a conversation sets its own, e.g. {"temperature": 0.7}.',
    )
    accepted_params = models.JSONField(
        "accepted parameters",
        default=standard_params,
        blank=True,
        help_text="The sampling parameters users may set for this model. Others are never sent.",
    )
    max_tokens_param = models.CharField(
        "reply length parameter",
        max_length=30,
        choices=[(key, key) for key in MAX_TOKENS_KEYS],
        default="max_tokens",
        help_text="OpenAI's reasoning models want max_completion_tokens.",
    )
    streams_reasoning = models.BooleanField(
        default=False, help_text="Shows its reasoning (in a collapsed section above the reply)."
    )
    accepts_tools = models.BooleanField(default=False, help_text="Can ask for tool calls.")
    accepts_json_mode = models.BooleanField(
        "accepts JSON mode",
        default=False,
        help_text='Accepts response_format {"type": "json_object"}; users may turn it on.',
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

    @property
    def is_available(self) -> bool:
        """Whether users can chat with it now (it and its provider are enabled)."""
        return self.enabled and self.provider.enabled

    @property
    def capabilities(self) -> list[str]:
        """Short words for pickers: what this model does beyond plain chat."""
        words = []
        if self.streams_reasoning:
            words.append("reasoning")
        if self.accepts_tools:
            words.append("tools")
        if self.accepts_json_mode:
            words.append("JSON mode")
        return words
