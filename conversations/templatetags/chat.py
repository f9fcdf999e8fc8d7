from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from conversations.rendering import render_markdown, render_plain

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    """Sanitized HTML for model output (which is hostile input)."""
    return render_markdown(text or "")


@register.filter
def plaintext(text: str) -> SafeString:
    return render_plain(text or "")
