"""Per-user limits on sending: how many replies may stream at once, and how many messages may be
sent in a window of time.

Checked inside the send's transaction, from the stored messages themselves, so they hold across
processes with no other shared state. The user's row is locked first: one user's sends, from any
process, are checked one after the other, so two of them can never both pass a count of N-1.
Everything the checks need is then read in one more round trip (``sender_state``), because the
send is on the path to the reply's first token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, DateTimeField, Exists, OuterRef, Subquery, Value

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
    """What the checks need, in one query. Call after locking the user's row, in a statement of
    its own: under READ COMMITTED a statement sees the data as it was when it began, so counts
    read by the locking statement itself could miss a send that committed while it waited."""
    owned = Message.objects.filter(conversation__owner=OuterRef("pk"))
    streaming = owned.filter(status=Message.Status.STREAMING)
    fields = {
        "streaming": Subquery(
            streaming.order_by().values("conversation__owner").annotate(n=Count("pk")).values("n")
        ),
        "busy": (
            Exists(streaming.filter(conversation=conversation))
            if conversation is not None
            else Value(False)
        ),
        "resent": Value(False),
        "nth_latest": Value(None, output_field=DateTimeField()),
    }
    if client_id is not None:
        sent = owned.filter(client_id=client_id, role=Message.Role.USER)
        if conversation is not None:
            sent = sent.filter(conversation=conversation)
        fields["resent"] = Exists(sent)
    rate = settings.CHAT_SEND_RATE_LIMIT
    if rate:
        # The rate-th latest message: while it is inside the window, the window is full, and a
        # place frees up when it leaves it.
        recent = owned.filter(
            role=Message.Role.USER, created_at__gt=now - settings.CHAT_SEND_RATE_WINDOW
        )
        fields["nth_latest"] = Subquery(
            recent.order_by("-created_at").values("created_at")[rate - 1 : rate]
        )
    row = get_user_model().objects.filter(pk=user.pk).annotate(**fields).values(*fields).get()
    return SenderState(
        resent=bool(row["resent"]),
        busy=bool(row["busy"]),
        streaming=row["streaming"] or 0,
        nth_latest=row["nth_latest"],
    )


def refuse_over_limits(state: SenderState, *, now: datetime) -> None:
    """ChatError when a new reply would go over the user's limits (0 turns a limit off)."""
    limit = settings.CHAT_MAX_CONCURRENT_REPLIES
    if limit and state.streaming >= limit:
        replies = "1 reply" if state.streaming == 1 else f"{state.streaming} replies"
        raise ChatError(
            f"You already have {replies} being written, the most allowed at once. "
            "Wait for one to finish, or stop one, then send again. " + KEEP_DRAFT,
            code="too_many_replies",
        )
    if state.nth_latest is not None:
        window = settings.CHAT_SEND_RATE_WINDOW
        wait = (state.nth_latest + window - now).total_seconds()
        raise ChatError(
            f"You have sent {settings.CHAT_SEND_RATE_LIMIT} messages in the last "
            f"{_seconds(window.total_seconds())}, the most allowed. "
            f"Try again in {_seconds(wait)}. " + KEEP_DRAFT,
            code="rate_limited",
        )


def _seconds(seconds: float) -> str:
    whole = max(1, math.ceil(seconds))
    return "1 second" if whole == 1 else f"{whole} seconds"
