"""The per-user limit on replies generating at once (the request rate and the budgets are the
usage app's: usage/limits.py).

Checked inside the transaction that would start a reply (send, edit, regenerate, retry,
continue), from the stored messages themselves, so it holds across processes with no other
shared state. The user's row is locked first: one user's sends, from any process, are checked
one after the other, so two of them can never both pass a count of N-1.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from conversations.errors import ChatError
from conversations.models import Message

KEEP_DRAFT = "Your message is still in the box."


def lock_sender(*, user: AbstractBaseUser) -> None:
    """Lock the user's row until the transaction ends. Taken before usage's limit rows, always,
    so that concurrent sends cannot deadlock.

    SQLite has no row locks, but its IMMEDIATE transactions already run one at a time."""
    list(get_user_model().objects.filter(pk=user.pk).select_for_update().values_list("pk"))


def streaming_conversations(*, user: AbstractBaseUser) -> list[object]:
    """The conversations of this user's streaming replies (one entry per reply).

    Call after ``lock_sender``, in a statement of its own: under READ COMMITTED a statement sees
    the data as it was when it began, so a count read by the locking statement itself could
    miss a send that committed while it waited."""
    return list(
        Message.objects.filter(
            conversation__owner=user, status=Message.Status.STREAMING
        ).values_list("conversation_id", flat=True)
    )


def replies_refusal(*, user: AbstractBaseUser, conversation_id: object = None) -> ChatError | None:
    """Why a new reply would go over the user's concurrent-replies limit, or None (0: no limit).

    None too when ``conversation_id`` has a reply streaming: that conversation is busy, which
    the store itself refuses (one streaming reply per conversation) with its own message."""
    limit = settings.CHAT_MAX_CONCURRENT_REPLIES
    if not limit:
        return None
    conversations = streaming_conversations(user=user)
    streaming = len(conversations)
    if streaming < limit or (conversation_id is not None and conversation_id in conversations):
        return None
    replies = "1 reply" if streaming == 1 else f"{streaming} replies"
    return ChatError(
        f"You already have {replies} being written, the most allowed at once. "
        "Wait for one to finish, or stop one, then send again. " + KEEP_DRAFT,
        code="too_many_replies",
    )
