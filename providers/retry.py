"""Retry policy: which failures are retried, and how long to wait before the next attempt."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["BACKOFF_BASE", "BACKOFF_CAP", "RETRY_STATUSES", "backoff_delay", "parse_retry_after"]

BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0

# Statuses worth another try: timeouts, conflicts, rate limits and server errors. A budget
# answer can come with 429 too; the caller checks the error kind before retrying.
RETRY_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES or 500 <= status <= 599


def backoff_delay(retry_number: int, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with jitter; retry_number starts at 1.

    "Equal jitter": half the step is fixed, half random, so clients that failed together
    spread out without any of them retrying at once.
    """
    step = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (retry_number - 1))
    return step / 2 + (rng or random).uniform(0, step / 2)


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait according to retry-after-ms (OpenAI) or Retry-After (seconds or date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
