"""Search across one user's conversations: titles and message text. Reads only.

PostgreSQL: full-text search (``to_tsvector`` / prefix ``to_tsquery``) served by the GIN
expression indexes of migration 0005, highlighted with ``ts_headline``. Other databases (the
zero-setup SQLite) fall back to a case-insensitive substring match, highlighted here.

Every query starts from ``owner=user``: nobody's search can reach another user's messages.
Highlighted snippets are escaped text with <mark> around the matches: never HTML from the
message itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchVector
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from conversations.models import Conversation, Message

# The text search configuration of the indexes (migration 0005 creates them with this value).
SEARCH_CONFIG = "english"
MAX_TERMS = 8
MAX_QUERY_CHARS = 200
SNIPPET_CHARS = 160
# Marks put around matches by ts_headline, turned into <mark> after escaping. Control
# characters that nobody types; a stray one in a message only misplaces a highlight.
_START, _STOP = "\x02", "\x03"
# Letters and digits only: whatever else is typed never reaches to_tsquery.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class SearchHit:
    conversation_id: UUID
    conversation_title: str
    message_id: int | None  # None when the title matched
    role: str
    snippet: SafeString
    created_at: datetime
    archived: bool

    @property
    def url(self) -> str:
        if self.message_id is None:
            return f"/c/{self.conversation_id}/"
        return f"/c/{self.conversation_id}/?message={self.message_id}#message-{self.message_id}"


@dataclass(frozen=True)
class SearchResults:
    query: str
    titles: list[SearchHit]
    messages: list[SearchHit]

    @property
    def empty(self) -> bool:
        return not self.titles and not self.messages


def search_terms(query: str) -> list[str]:
    return _WORD.findall(query[:MAX_QUERY_CHARS])[:MAX_TERMS]


def search(*, user: AbstractBaseUser, query: str, limit: int = 30) -> SearchResults:
    query = " ".join(query.split())[:MAX_QUERY_CHARS]
    terms = search_terms(query)
    if not terms or not user.is_authenticated:
        return SearchResults(query=query, titles=[], messages=[])
    own_messages = Message.objects.filter(conversation__owner=user).exclude(content="")
    own_conversations = Conversation.objects.filter(owner=user)
    if connection.vendor == "postgresql":
        return _search_postgresql(own_conversations, own_messages, query, terms, limit)
    return _search_substring(own_conversations, own_messages, query, terms, limit)


def _marked(text: str) -> SafeString:
    """Escape ``text``; the spans between the marks become <mark>…</mark>."""
    out: list[str] = []
    for index, part in enumerate(re.split(f"[{_START}{_STOP}]", text)):
        # Even parts lie outside the marks, odd ones inside (ts_headline always pairs them).
        out.append(f"<mark>{escape(part)}</mark>" if index % 2 and part else escape(part))
    return mark_safe("".join(out))  # every piece of text above is escaped


def _search_postgresql(
    conversations: QuerySet[Conversation],
    messages: QuerySet[Message],
    query: str,
    terms: list[str],
    limit: int,
) -> SearchResults:
    # Each term as a prefix ("pyth" finds "python"); only word characters reach to_tsquery.
    tsquery = SearchQuery(
        " & ".join(f"{term}:*" for term in terms), config=SEARCH_CONFIG, search_type="raw"
    )
    marks = {"start_sel": _START, "stop_sel": _STOP}
    title_rows = (
        conversations.annotate(document=SearchVector("title", config=SEARCH_CONFIG))
        .filter(document=tsquery)
        .annotate(
            headline=SearchHeadline(
                "title", tsquery, config=SEARCH_CONFIG, highlight_all=True, **marks
            )
        )
        .order_by("-updated_at")
        .values("id", "title", "headline", "created_at", "archived")[:limit]
    )
    message_rows = (
        messages.annotate(document=SearchVector("content", config=SEARCH_CONFIG))
        .filter(document=tsquery)
        .annotate(
            headline=SearchHeadline(
                "content",
                tsquery,
                config=SEARCH_CONFIG,
                max_words=30,
                min_words=12,
                max_fragments=2,
                fragment_delimiter=" … ",
                **marks,
            )
        )
        .order_by("-id")
        .values(
            "id",
            "role",
            "headline",
            "created_at",
            "conversation_id",
            "conversation__title",
            "conversation__archived",
        )[:limit]
    )
    return SearchResults(
        query=query,
        titles=[
            SearchHit(
                conversation_id=row["id"],
                conversation_title=row["title"],
                message_id=None,
                role="",
                snippet=_marked(row["headline"]),
                created_at=row["created_at"],
                archived=row["archived"],
            )
            for row in title_rows
        ],
        messages=[_message_hit(row, _marked(row["headline"])) for row in message_rows],
    )


def _message_hit(row: dict, snippet: SafeString) -> SearchHit:
    return SearchHit(
        conversation_id=row["conversation_id"],
        conversation_title=row["conversation__title"] or "New chat",
        message_id=row["id"],
        role=row["role"],
        snippet=snippet,
        created_at=row["created_at"],
        archived=row["conversation__archived"],
    )


def _highlight(text: str, terms: list[str], *, window: int | None = SNIPPET_CHARS) -> SafeString:
    """The part of ``text`` around the first match, escaped, with every match marked."""
    pattern = re.compile("|".join(re.escape(term) for term in terms), re.IGNORECASE)
    if window is not None:
        found = pattern.search(text)
        start = max(0, (found.start() if found else 0) - window // 3)
        piece = text[start : start + window]
        text = ("…" if start else "") + piece + ("…" if start + window < len(text) else "")
    text = " ".join(text.replace(_START, "").replace(_STOP, "").split())
    return _marked(pattern.sub(lambda m: f"{_START}{m.group(0)}{_STOP}", text))


def _search_substring(
    conversations: QuerySet[Conversation],
    messages: QuerySet[Message],
    query: str,
    terms: list[str],
    limit: int,
) -> SearchResults:
    title_filter = Q()
    content_filter = Q()
    for term in terms:
        title_filter &= Q(title__icontains=term)
        content_filter &= Q(content__icontains=term)
    title_rows = (
        conversations.filter(title_filter)
        .order_by("-updated_at")
        .values("id", "title", "created_at", "archived")[:limit]
    )
    message_rows = (
        messages.filter(content_filter)
        .order_by("-id")
        .values(
            "id",
            "role",
            "content",
            "created_at",
            "conversation_id",
            "conversation__title",
            "conversation__archived",
        )[:limit]
    )
    return SearchResults(
        query=query,
        titles=[
            SearchHit(
                conversation_id=row["id"],
                conversation_title=row["title"],
                message_id=None,
                role="",
                snippet=_highlight(row["title"], terms, window=None),
                created_at=row["created_at"],
                archived=row["archived"],
            )
            for row in title_rows
        ],
        messages=[_message_hit(row, _highlight(row["content"], terms)) for row in message_rows],
    )
