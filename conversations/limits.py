"""Per-user limits on sending: how many replies may stream at once, and how many messages may be
sent in a window of time.

Checked inside the send's transaction, from the stored messages themselves, so they hold across
processes with no other shared state. The user's row is locked first: one user's sends, from any
process, are checked one after the other, so two of them can never both pass a count of N-1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from conversations.errors import ChatError
from conversations.models import Conversation, Message

KEEP_DRAFT = "Your message is still in the box."


@dataclass(frozen=True)
class SenderState:
    resent: bool  # a message with this client id is stored already
    busy: bool  # the conversation has a reply streaming
    streaming: int  # replies of this user streaming, in any conversation
    # Created time of the user's rate-th latest message inside the window, if there is one.
    nth_latest: datetime | None


def lock_sender(*, user: AbstractBaseUser) -> None:
    """Lock the user's row until the transaction ends (``conversation_get_for_user`` with
    ``lock_owner=True`` does the same while loading a conversation).

    SQLite has no row locks, but its IMMEDIATE transactions already run one at a time."""
    list(get_user_model().objects.filter(pk=user.pk).select_for_update().values_list("pk"))


def sender_state(
    *,
    user: AbstractBaseUser,
    conversation: Conversation | None,
    client_id: UUID | None,
    now: datetime,
) -> SenderState:
    """What the checks need. Call after locking the user's row, in statements of their own:
    under READ COMMITTED a statement sees the data as it was when it began, so counts read by
    the locking statement itself could miss a send that committed while it waited.

    Two or three small queries rather than one with subqueries: on the path to the first token,
    building Django's query costs more CPU than a round trip to the database."""
    owned = Message.objects.filter(conversation__owner=user)
    streaming = list(
        owned.filter(status=Message.Status.STREAMING).values_list("conversation_id", flat=True)
    )
    resent = False
    if client_id is not None and conversation is None:
        # A resent first message of a new chat. In an existing conversation the unique
        # constraint on (conversation, client_id) catches a resend, at no cost to other sends.
        resent = owned.filter(client_id=client_id, role=Message.Role.USER).exists()
    nth_latest = None
    rate = settings.CHAT_SEND_RATE_LIMIT
    if rate:
        # The rate-th latest message: while it is inside the window, the window is full, and a
        # place frees up when it leaves it.
        recent = owned.filter(
            role=Message.Role.USER, created_at__gt=now - settings.CHAT_SEND_RATE_WINDOW
        )
        nth_latest = (
            recent.order_by("-created_at").values_list("created_at", flat=True)[rate - 1 : rate]
        ).first()
    return SenderState(
        resent=resent,
        busy=conversation is not None and conversation.pk in streaming,
        streaming=len(streaming),
        nth_latest=nth_latest,
    )


def limit_refusal(state: SenderState, *, now: datetime) -> ChatError | None:
    """Why a new reply would go over the user's limits, or None (0 turns a limit off)."""
    limit = settings.CHAT_MAX_CONCURRENT_REPLIES
    if limit and state.streaming >= limit:
        replies = "1 reply" if state.streaming == 1 else f"{state.streaming} replies"
        return ChatError(
            f"You already have {replies} being written, the most allowed at once. "
            "Wait for one to finish, or stop one, then send again. " + KEEP_DRAFT,
            code="too_many_replies",
        )
    if state.nth_latest is not None:
        window = settings.CHAT_SEND_RATE_WINDOW
        wait = (state.nth_latest + window - now).total_seconds()
        return ChatError(
            f"You have sent {settings.CHAT_SEND_RATE_LIMIT} messages in the last "
            f"{_seconds(window.total_seconds())}, the most allowed. "
            f"Try again in {_seconds(wait)}. " + KEEP_DRAFT,
            code="rate_limited",
        )
    return None


def _seconds(seconds: float) -> str:
    whole = max(1, math.ceil(seconds))
    return "1 second" if whole == 1 else f"{whole} seconds"
