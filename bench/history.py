"""Benchmark: building one request's context for conversations of 100, 1,000 and 10,000 messages.

    .venv/bin/python bench/history.py

It creates its own PostgreSQL database (dropped at the end), stores three conversations of
varied message lengths, and times planning the request for the newest message (what
``message_send`` runs inside its transaction: conversations.history.plan_request), with strategy
"drop" and with "summarize" (a stored summary covering all but the last 20 messages), repeated,
reporting the median as a ratio to the 100-message case (target: under 3x at 10,000). It also
counts the message texts each build reads, which must be only those of the messages sent,
never the whole conversation.

BENCH_DATABASE_URL (else TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432) names the
server; the database name in it is ignored.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = (100, 1_000, 10_000)
REPEAT = 40
WORDS = [
    "the",
    "a",
    "model",
    "token",
    "window",
    "context",
    "history",
    "summary",
    "message",
    "reply",
    "budget",
    "user",
]


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(_with_db(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


def main() -> None:
    server = os.environ.get(
        "BENCH_DATABASE_URL",
        os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
    )
    name = f"bench_history_{os.getpid()}"
    _admin(server, f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = _with_db(server, name)
    os.environ["DATABASE_POOL"] = "0"
    os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    try:
        run()
    finally:
        from django.db import connections

        connections.close_all()
        _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _store_conversation(owner, model, size: int, rng: random.Random):
    """A linear conversation of ``size`` messages (ids given here, so parents can be set in one
    bulk insert), ending with a user message: the one being sent."""
    from django.db import connection
    from django.db.models import Max

    from conversations.models import Conversation, Message
    from conversations.tokens import message_tokens

    conversation = Conversation.objects.create(owner=owner, model=model, system_prompt="Be brief.")
    start = (Message.objects.aggregate(top=Max("id"))["top"] or 0) + 1
    rows = []
    for index in range(size):
        role = "user" if index % 2 == 0 or index == size - 1 else "assistant"
        text = " ".join(rng.choices(WORDS, k=rng.randint(5, 300)))
        rows.append(
            Message(
                id=start + index,
                conversation=conversation,
                parent_id=start + index - 1 if index else None,
                role=role,
                content=text,
                token_count=message_tokens(text),
                depth=index,
            )
        )
    Message.objects.bulk_create(rows, batch_size=2000)
    with connection.cursor() as cursor:
        table = Message._meta.db_table
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
        )
    conversation.current_leaf_id = rows[-1].id
    conversation.save(update_fields=["current_leaf"])
    return conversation, Message.objects.get(id=rows[-1].id)


class QueryCounter:
    """Counts queries and the message texts they load (rows of a query selecting content)."""

    def __init__(self) -> None:
        self.queries = 0
        self.texts = 0

    def __call__(self, execute, sql, params, many, context):
        self.queries += 1
        result = execute(sql, params, many, context)
        if re.search(r'"conversations_message"\."content"', sql):
            self.texts += context["cursor"].rowcount
        return result


def _summarize_all_but(conversation, newest, tail: int) -> None:
    """A stored summary covering the branch up to ``tail`` messages before the newest, as a
    conversation that has been going on with strategy "summarize" has."""
    from conversations.models import Message, Summary

    ids = list(
        Message.objects.filter(conversation=conversation)
        .order_by("id")
        .values_list("id", flat=True)
    )
    end = ids[-tail - 1]
    text = "The user and the assistant discussed " + "many things, " * 150
    Summary.objects.create(
        conversation=conversation,
        first_message_id=ids[0],
        last_message_id=end,
        message_count=len(ids) - tail,
        content=text,
        token_count=len(text.split()),
    )


def run() -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)

    from conversations.history import plan_request
    from tests.factories import make_chat_model, make_user

    owner = make_user("bench")
    model = make_chat_model(
        "http://127.0.0.1:9/v1", name="bench", context_window=8192, max_output_tokens=1024
    )
    rng = random.Random(5)
    stored = {size: _store_conversation(owner, model, size, rng) for size in SIZES}
    for conversation, newest in stored.values():
        _summarize_all_but(conversation, newest, tail=20)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    def build(size: int, strategy: str):
        conversation, newest = stored[size]
        conversation.context_strategy = strategy  # in memory only: what plan_request reads
        plan = plan_request(conversation=conversation, newest=newest, model=model)
        assert plan.context is not None, "the benchmark must not need a summary call"
        return plan.context

    print(f"history: building one request, median of {REPEAT} runs, PostgreSQL")
    for strategy in ("drop", "summarize"):
        counts: dict[int, QueryCounter] = {}
        sent: dict[int, int] = {}
        for size in SIZES:
            build(size, strategy)  # warm up: caches, the tokenizer, the query plan
            counter = QueryCounter()
            with connection.execute_wrapper(counter):
                context = build(size, strategy)
            counts[size], sent[size] = counter, len(context.sent_ids) - 1
        # Interleaved rounds, so a slow moment on a shared machine hurts every size alike.
        times: dict[int, list[float]] = {size: [] for size in SIZES}
        for _ in range(REPEAT):
            for size in SIZES:
                began = time.perf_counter()
                build(size, strategy)
                times[size].append(time.perf_counter() - began)
        medians = {size: statistics.median(times[size]) for size in SIZES}
        base = medians[SIZES[0]]
        print(f"  strategy {strategy}:")
        for size in SIZES:
            c = counts[size]
            print(
                f"    {size:>6,} messages: {medians[size] / base:5.2f}x the 100-message case  "
                f"({c.queries} queries; texts read: {c.texts}, the {sent[size]} earlier "
                "messages sent)"
            )


if __name__ == "__main__":
    main()
