from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from conversations.models import Conversation
from conversations.rendering import render_markdown, render_plain
from conversations.selectors import context_strategy_default
from providers.models import ContextStrategy

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    """Sanitized HTML for model output (which is hostile input)."""
    return render_markdown(text or "")


@register.filter
def plaintext(text: str) -> SafeString:
    return render_plain(text or "")


# Short words for the header, where the select's full labels would not fit.
_SHORT = {ContextStrategy.SUMMARIZE: "summarize", ContextStrategy.DROP: "leave out"}


@register.simple_tag
def context_strategy_options(conversation: Conversation) -> dict:
    """The choices of the conversation's "long chats" setting (what the history service does
    with turns that no longer fit)."""
    default = ContextStrategy(context_strategy_default(conversation=conversation))
    chosen = conversation.context_strategy
    return {
        "chosen": chosen,
        "current": _SHORT[ContextStrategy(chosen or default)],
        "options": [("", f"Default ({default.label.lower()})"), *ContextStrategy.choices],
    }
