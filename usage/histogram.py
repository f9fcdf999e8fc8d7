"""Log-spaced buckets for time to first token, so percentiles over any date range come from a
few hundred roll-up rows instead of sorting every record (which grows with the range).

Bucket 0 holds 0-10 ms; bucket b >= 1 holds [10 * 1.2**(b-1), 10 * 1.2**b) ms: each bucket is
20% wide, and interpolating inside it keeps the reported p50/p95 within a few percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from django.db.models import F, FloatField, Func, IntegerField, Value
from django.db.models.expressions import Combinable
from django.db.models.functions import Cast, Floor, Greatest, Least, Ln

BASE_MS = 10.0
FACTOR = 1.2
LAST_BUCKET = 90  # about 12 days: anything slower is clamped here


def bucket_of(ms: int) -> int:
    if ms < BASE_MS:
        return 0
    return min(LAST_BUCKET, math.floor(math.log(ms / BASE_MS) / math.log(FACTOR)) + 1)


def bucket_bounds(bucket: int) -> tuple[float, float]:
    if bucket <= 0:
        return 0.0, BASE_MS
    return BASE_MS * FACTOR ** (bucket - 1), BASE_MS * FACTOR**bucket


def bucket_expression(field: str) -> Func | Combinable:
    """bucket_of() in SQL, for rebuilding the roll-ups from the records."""
    ms = Cast(Greatest(F(field), Value(1)), FloatField())
    raw = Floor(Ln(ms / Value(BASE_MS)) / Value(math.log(FACTOR))) + Value(1)
    return Cast(Least(Value(LAST_BUCKET), Greatest(Value(0), raw)), IntegerField())


def percentile(counts: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram {bucket: count}, interpolated inside its bucket."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(counts):
        count = counts[bucket]
        if count <= 0:
            continue
        if seen + count >= rank:
            low, high = bucket_bounds(bucket)
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    low, high = bucket_bounds(max(counts))
    return high
