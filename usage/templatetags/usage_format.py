"""Number formats shared by the usage pages and the CSV's twin (usage.export)."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def thousands(value: object) -> str:
    try:
        return f"{int(value):,}"  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return ""


@register.filter
def usd(value: object) -> str:
    """Dollars with cents; sub-cent amounts keep four decimals so they do not read as zero."""
    try:
        amount = Decimal(str(value))
    except (ArithmeticError, ValueError):
        return ""
    if amount and abs(amount) < Decimal("0.01"):
        return f"${amount:,.4f}"
    return f"${amount:,.2f}"


@register.filter
def percent(value: object) -> str:
    try:
        return f"{float(value) * 100:.1f}%"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


@register.filter
def duration_ms(value: object) -> str:
    if value is None or value == "":
        return "—"
    ms = float(value)  # type: ignore[arg-type]
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"
