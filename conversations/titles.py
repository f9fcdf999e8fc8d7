"""Titles written by the model after a conversation's first exchange.

One small extra upstream call, made by the generation task once the first reply is complete
(never on the event loop with the ORM: the stored part goes through a sync service). If it fails
or answers nothing usable, the title made of the first words of the message stays; a title the
user set is never replaced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from providers.client import ChatRequest, ProviderConfig

TITLE_INSTRUCTION = (
    "You write titles for chat conversations. Reply with a short title (at most six words) "
    "for the conversation that starts with the exchange below. Reply with the title only: no "
    "quotes, no trailing punctuation, no explanation."
)
# Enough for a six-word title in any language; small, because titles are metered like replies.
TITLE_MAX_TOKENS = 32
# Only the start of the exchange is sent: a title needs the gist, not the whole text.
EXCERPT_CHARS = 1500
TITLE_MAX_CHARS = 80

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_PREFIX = re.compile(r"^(title\s*:\s*)", re.IGNORECASE)
_EDGE = " \t\"'`*#_.\u201c\u201d\u2018\u2019\u00ab\u00bb"


@dataclass(frozen=True)
class TitlePlan:
    """What the title call needs, resolved while the database was at hand."""

    config: ProviderConfig
    model: str
    chat_model_id: int | None
    question: str


def title_request(plan: TitlePlan, answer: str) -> ChatRequest:
    exchange = f"User: {plan.question[:EXCERPT_CHARS]}\n\nAssistant: {answer[:EXCERPT_CHARS]}"
    return ChatRequest(
        model=plan.model,
        messages=[
            {"role": "system", "content": TITLE_INSTRUCTION},
            {"role": "user", "content": exchange},
        ],
        params={"max_tokens": TITLE_MAX_TOKENS},
    )


def is_title_request(body: object) -> bool:
    """Whether a recorded request body is a title call (for tests that read the upstream)."""
    try:
        return body["messages"][0]["content"] == TITLE_INSTRUCTION  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return False


def clean_title(text: str) -> str:
    """The title in a model's answer, or "" when there is none worth keeping."""
    text = _THINK.sub("", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    title = _PREFIX.sub("", lines[0])
    # Markdown emphasis and code marks mean nothing in a title.
    title = title.replace("**", "").replace("__", "").replace("`", "").strip(_EDGE)
    title = " ".join(title.split())
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 1].rstrip() + "…"
    return title
