"""The metering hook: every upstream call this app makes, announced once it is stored.

Replies keep their token counts on the Message (prompt_tokens, completion_tokens,
usage_estimated); the call that writes a conversation's title keeps them on the Conversation
(title_prompt_tokens, ...); a summary of earlier messages keeps them on its Summary row. Besides
that, each finished call is announced through the
``upstream_call_recorded`` signal after its transaction commits, so that a usage-accounting
module can keep per-user, per-model records without touching the code that makes the calls:

    @receiver(upstream_call_recorded)
    def keep(sender, call: UpstreamCall, **kwargs): ...

Receivers run synchronously in the thread that stored the call (never on the event loop) and
their failures are logged, never raised into the chat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

upstream_call_recorded = Signal()


@dataclass(frozen=True)
class UpstreamCall:
    purpose: str  # "reply" (also regenerate and continue), "title" or "summary"
    user_id: int
    conversation_id: UUID
    message_id: int | None  # the reply written; None for a title or a summary
    chat_model_id: int | None
    model_name: str
    prompt_tokens: int | None
    completion_tokens: int | None
    estimated: bool  # True when the provider reported nothing and these are our estimates


def record_upstream_call(call: UpstreamCall) -> None:
    """Announce ``call`` once the surrounding transaction (if any) has committed. Sync."""

    def announce() -> None:
        for receiver, result in upstream_call_recorded.send_robust(sender=UpstreamCall, call=call):
            if isinstance(result, Exception):
                logger.error("usage receiver %r failed", receiver, exc_info=result)

    transaction.on_commit(announce)
