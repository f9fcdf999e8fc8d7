"""Pages stay as fast with a lot of history: one command, ratios against the same run.

    .venv/bin/python bench/pages.py            (BENCH_DATABASE_URL to use another server)

Builds its own PostgreSQL database (dropped and made again each run), then measures with
Django's test client, in process, the two pages that grow with a user's history:

- opening a conversation of 5,000 messages, against opening one of 10 messages (the same user,
  the same message texts: Markdown with code, rendered on every view);
- the sidebar (the home page) of a user with 10,000 conversations, against one with 10.

Only what is shown should be read: the newest messages of the branch (a recursive walk up from
the leaf, then the text of those messages only) and the first page of the sidebar. Target: each
within 3x of its baseline. Prints medians, the queries each page makes, and the ratios.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER = os.environ.get("BENCH_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
NAME = os.environ.get("BENCH_DATABASE_NAME", "bench_pages")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "40"))
TARGET = 3.0

REPLY = """Here is how to do it, step by step.

1. Read the **configuration** first; it tells you which `backend` is used.
2. Then call the function below, which handles the retries for you:

```python
def fetch(url: str, attempts: int = 3) -> bytes:
    for attempt in range(attempts):
        try:
            return download(url, timeout=10)
        except TimeoutError:
            sleep(2 ** attempt)
    raise RuntimeError(f"gave up on {url}")
```

| option | default | meaning |
| --- | --- | --- |
| `timeout` | 10 | seconds per attempt |
| `attempts` | 3 | how many tries |

> Note: the backoff doubles each time, so the worst case is about {n} seconds.
"""
QUESTION = "Question {n}: how would I make the download in my script retry on timeouts?"


def _database() -> str:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NAME))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(NAME)))
    return f"{SERVER}/{NAME}"


def _setup_django(database_url: str) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL=database_url,
        DATABASE_POOL="0",
        DEBUG="0",
        SECRET_KEY="bench-" + "x" * 60,
        VAR_DIR=tempfile.mkdtemp(prefix="bench-var-"),
        STATIC_ROOT=tempfile.mkdtemp(prefix="bench-static-"),
        LOG_LEVEL="WARNING",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)


def _chain(conversation, count: int, model) -> None:
    """``count`` messages, each following the previous one, alternating question and reply."""
    from conversations.models import Message

    rows = [
        Message(
            conversation=conversation,
            role="user" if n % 2 == 0 else "assistant",
            content=(QUESTION if n % 2 == 0 else REPLY).replace("{n}", str(n)),
            status="complete",
            token_count=40 if n % 2 == 0 else 260,
            depth=n,
            model=model if n % 2 else None,
            model_name=model.label if n % 2 else "",
        )
        for n in range(count)
    ]
    rows = Message.objects.bulk_create(rows, batch_size=1000)
    for previous, row in pairwise(rows):
        row.parent_id = previous.id
    Message.objects.bulk_update(rows[1:], ["parent"], batch_size=1000)
    conversation.current_leaf_id = rows[-1].id
    conversation.save(update_fields=["current_leaf"])


def _conversations(owner, count: int) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from conversations.models import Conversation

    now = timezone.now()
    Conversation.objects.bulk_create(
        [
            Conversation(
                owner=owner,
                title=f"Conversation number {n} about retries",
                created_at=now - timedelta(minutes=n),
                updated_at=now - timedelta(minutes=n),
            )
            for n in range(count)
        ],
        batch_size=2000,
    )


def _build():
    from django.contrib.auth import get_user_model

    from conversations.models import Conversation
    from providers.models import ChatModel, Provider

    users = get_user_model().objects
    provider = Provider.objects.create(name="Bench", base_url="http://127.0.0.1:9/v1")
    model = ChatModel.objects.create(provider=provider, name="bench-model", is_default=True)

    reader = users.create_user("reader", password="x")
    short = Conversation.objects.create(owner=reader, title="Short", model=model)
    _chain(short, 10, model)
    long = Conversation.objects.create(owner=reader, title="Long", model=model)
    _chain(long, 5000, model)

    few = users.create_user("few", password="x")
    _conversations(few, 10)
    many = users.create_user("many", password="x")
    _conversations(many, 10_000)

    with psycopg.connect(f"{SERVER}/{NAME}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return reader, short, long, few, many


def _client(user):
    from django.test import Client

    client = Client(raise_request_exception=True, HTTP_HOST="127.0.0.1")
    client.force_login(user)
    return client


def _measure(cases: dict[str, tuple]) -> dict[str, dict]:
    """Each case: (client, url). Interleaved rounds, so drift hits every case alike."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    results: dict[str, dict] = {}
    for name, (client, url) in cases.items():
        for _ in range(3):  # warm-up: templates, caches, connections
            assert client.get(url).status_code == 200
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        results[name] = {"times": [], "queries": len(captured), "bytes": len(response.content)}
    for _ in range(ROUNDS):
        for name, (client, url) in cases.items():
            started = time.perf_counter()
            response = client.get(url)
            results[name]["times"].append(time.perf_counter() - started)
            assert response.status_code == 200
    return results


def main() -> None:
    database_url = _database()
    print(f"building {NAME} …", flush=True)
    _setup_django(database_url)
    reader, short, long, few, many = _build()
    reader_client = _client(reader)
    results = _measure(
        {
            "conversation, 10 messages": (reader_client, f"/c/{short.id}/"),
            "conversation, 5,000 messages": (reader_client, f"/c/{long.id}/"),
            "sidebar, 10 conversations": (_client(few), "/"),
            "sidebar, 10,000 conversations": (_client(many), "/"),
        }
    )
    print(f"\n{ROUNDS} rounds each, medians (PostgreSQL, in-process test client)\n")
    print(f"{'page':34} {'median ms':>10} {'p90 ms':>8} {'queries':>8} {'KB':>6}")
    for name, result in results.items():
        times = sorted(result["times"])
        median = statistics.median(times) * 1000
        p90 = times[int(len(times) * 0.9) - 1] * 1000
        print(
            f"{name:34} {median:10.1f} {p90:8.1f} {result['queries']:8d} "
            f"{result['bytes'] / 1024:6.0f}"
        )

    def ratio(big: str, small: str) -> float:
        return statistics.median(results[big]["times"]) / statistics.median(results[small]["times"])

    print()
    ok = True
    for label, big, small in (
        (
            "conversation 5,000 / 10 messages",
            "conversation, 5,000 messages",
            "conversation, 10 messages",
        ),
        (
            "sidebar 10,000 / 10 conversations",
            "sidebar, 10,000 conversations",
            "sidebar, 10 conversations",
        ),
    ):
        value = ratio(big, small)
        ok &= value <= TARGET
        print(f"{label:36} {value:5.2f}x  (target ≤ {TARGET:.0f}x)")
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NAME))
        )
    print("\nwithin target" if ok else "\nOVER TARGET")


if __name__ == "__main__":
    main()
