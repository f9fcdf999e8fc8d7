"""Reads about shares and exports.

A share is found by its token only, and every request asks the database again (no cache in any
process): revoking or expiring a link takes effect at once everywhere. Shares are listed and
changed only through a conversation loaded with ``conversation_get_for_user``.

Sync functions.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import defaultdict
from datetime import date, datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.selectors import messages_on_path
from sharing import transfer
from sharing.errors import ShareNotFound
from sharing.models import Share
from teams.models import Membership

# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet (256 bits).
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
DESCRIPTION_WORDS = 30
DESCRIPTION_MAX_CHARS = 200


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def share_viewer_allowed(*, share: Share, user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether ``user`` may open ``share``: the one place visibility is decided.

    "Members" are the signed-in users who share a team with the owner. An owner in no team is
    on an instance that does not use teams, where the instance itself is the team: then any
    signed-in user may open it.
    """
    if share.visibility == Share.Visibility.LINK:
        return True
    if not user.is_authenticated:
        return False
    owner_id = share.conversation.owner_id
    if user.pk == owner_id:
        return True
    owner_teams = Membership.objects.filter(user_id=owner_id).values("team_id")
    if not owner_teams.exists():
        return True
    return Membership.objects.filter(user=user, team_id__in=owner_teams).exists()


def share_get_by_token(*, token: str, now: datetime | None = None) -> Share:
    """The live share with this token, or ShareNotFound (unknown, revoked or expired)."""
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise ShareNotFound
    now = now or timezone.now()
    share = (
        Share.objects.select_related("conversation__model__provider")
        .filter(token_digest=token_digest(token))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .first()
    )
    # The digest matched; comparing the tokens themselves, in constant time, costs nothing.
    if share is None or not secrets.compare_digest(share.token, token):
        raise ShareNotFound
    return share


def expiry_min_date() -> date:
    """The earliest expiry date a share form offers: a link expires when its day begins."""
    return timezone.localdate() + timedelta(days=1)


def share_for_conversation(*, conversation: Conversation) -> Share | None:
    """The conversation's share, expired or not (the owner still sees and can update it)."""
    return Share.objects.filter(conversation=conversation).first()


def shares_for_user(*, user: AbstractBaseUser) -> list[Share]:
    return list(
        Share.objects.filter(conversation__owner=user)
        .select_related("conversation")
        .order_by("-created_at", "-id")
    )


def share_messages(*, share: Share) -> list[Message]:
    """The snapshot's messages, in the order they were shown."""
    ids = [i for i in share.message_ids if isinstance(i, int)]
    by_id = Message.objects.filter(conversation_id=share.conversation_id).in_bulk(ids)
    return [by_id[i] for i in ids if i in by_id]


def description_from(messages: list[Message]) -> str:
    """A preview for link unfurls and search results: the first words of the first question."""
    first = next((m for m in messages if m.role == Message.Role.USER), None)
    if first is None:
        return "A shared conversation."
    words = first.content.split()
    text = " ".join(words[:DESCRIPTION_WORDS])
    if len(words) > DESCRIPTION_WORDS or len(text) > DESCRIPTION_MAX_CHARS:
        text = text[: DESCRIPTION_MAX_CHARS - 1].rstrip() + "…"
    return text


# --- export ------------------------------------------------------------------------------------
def conversation_export(*, conversation: Conversation) -> dict:
    """The conversation's whole tree in the JSON export format."""
    messages = Message.objects.filter(conversation=conversation).order_by("id")
    return transfer.single_export(conversation, messages)


def conversation_export_markdown(*, conversation: Conversation) -> str:
    path = messages_on_path(conversation=conversation)
    total = Message.objects.filter(conversation=conversation).count()
    return transfer.conversation_markdown(conversation, path, total_messages=total)


def archive_export(*, user: AbstractBaseUser) -> dict:
    """Every conversation of the user's, in two queries."""
    conversations = list(
        Conversation.objects.filter(owner=user).select_related("model").order_by("created_at", "id")
    )
    by_conversation: dict[object, list[Message]] = defaultdict(list)
    for message in (
        Message.objects.filter(conversation__owner=user).order_by("id").iterator(chunk_size=2000)
    ):
        by_conversation[message.conversation_id].append(message)
    return transfer.archive_export(
        transfer.conversation_to_dict(c, by_conversation[c.id]) for c in conversations
    )
