"""Metering one upstream call: what is known when it is planned (CallContext), what is seen
while it streams (CallMeter), and what is recorded when it ends (UsageCall).

Any upstream call uses the same three steps, so that replies, summaries and titles are all
recorded the same way (see docs/usage.md):

    meter = CallMeter(context)                 # context = usage.services.call_context(...)
    async for event in stream_chat(config, request):
        meter.observe(event)
        ...
    call = meter.result(outcome="complete", completion_text=text)
    await database_sync_to_async(usage_record_call)(call=call)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from django.utils import timezone

from conversations.tokens import count_tokens
from providers.events import Event, ReasoningDelta, Retry, TextDelta, UpstreamError, Usage

MILLION = Decimal(1_000_000)
COST_PLACES = Decimal("0.000000001")


@dataclass(frozen=True)
class CallContext:
    """Who and what a call is for, resolved while the database was at hand."""

    call_id: str
    kind: str
    user_id: int | None
    username: str
    team_id: int | None
    team_name: str
    conversation_id: UUID | None
    model_id: int | None
    model_name: str
    provider_id: int | None
    provider_name: str
    input_price_per_mtok: Decimal | None
    output_price_per_mtok: Decimal | None
    estimated_prompt_tokens: int = 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        input_price = Decimal(str(self.input_price_per_mtok or 0))
        output_price = Decimal(str(self.output_price_per_mtok or 0))
        cost = Decimal(prompt_tokens) * input_price + Decimal(completion_tokens) * output_price
        cost /= MILLION
        return cost.quantize(COST_PLACES)


@dataclass(frozen=True)
class UsageCall:
    context: CallContext
    started_at: datetime
    duration_ms: int
    ttft_ms: int | None
    prompt_tokens: int
    completion_tokens: int
    tokens_estimated: bool
    outcome: str
    error_kind: str = ""
    retries: int = 0

    @property
    def cost(self) -> Decimal:
        return self.context.cost(self.prompt_tokens, self.completion_tokens)

    def with_context(self, **changes: object) -> UsageCall:
        return replace(self, context=replace(self.context, **changes))


class CallMeter:
    """Watches one call's events: retries made, time to first token, reported usage."""

    def __init__(self, context: CallContext) -> None:
        self.context = context
        self.started_at = timezone.now()
        self._started = time.monotonic()
        self.ttft_ms: int | None = None
        self.retries = 0
        self.usage: Usage | None = None
        self.error_kind = ""
        self.sent = True

    def begin(self) -> None:
        """The request is being sent now (after preparations such as summaries, which are calls
        of their own): time from here. A meter made with ``sent=False`` that never begins
        records a call that never reached the provider: no tokens."""
        self.started_at = timezone.now()
        self._started = time.monotonic()
        self.sent = True

    def _elapsed_ms(self) -> int:
        return max(0, round((time.monotonic() - self._started) * 1000))

    def observe(self, event: Event) -> None:
        if isinstance(event, Retry):
            self.retries += 1
        elif isinstance(event, TextDelta | ReasoningDelta):
            if self.ttft_ms is None and event.text:
                self.ttft_ms = self._elapsed_ms()
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, UpstreamError):
            self.error_kind = event.kind

    def result(self, *, outcome: str, error_kind: str = "", completion_text: str = "") -> UsageCall:
        """The call as it ended. Tokens the provider did not report are estimated (and marked):
        the prompt counts once the provider has taken the request (text arrived, or the call
        completed or was stopped); a call refused before any output costs nothing."""
        reported = self.usage
        estimated = False
        if reported is not None and reported.prompt_tokens is not None:
            prompt = reported.prompt_tokens
        else:
            estimated = True
            took_request = self.sent and (
                self.ttft_ms is not None or outcome in ("complete", "stopped")
            )
            prompt = self.context.estimated_prompt_tokens if took_request else 0
        if reported is not None and reported.completion_tokens is not None:
            completion = reported.completion_tokens
        else:
            estimated = True
            completion = count_tokens(completion_text)
        return UsageCall(
            context=self.context,
            started_at=self.started_at,
            duration_ms=self._elapsed_ms(),
            ttft_ms=self.ttft_ms,
            prompt_tokens=max(0, prompt),
            completion_tokens=max(0, completion),
            tokens_estimated=estimated,
            outcome=outcome,
            error_kind=error_kind or (self.error_kind if outcome == "error" else ""),
            retries=self.retries,
        )
