"""Benchmark: the usage dashboard and the filtered admin list over 1,000,000 usage records,
each as a ratio to the same page over 10,000 records (target: within 3x).

    .venv/bin/python bench/usage.py [--records 1000000] [--baseline 10000] [--repeat 15]

It creates two PostgreSQL databases (dropped at the end), each with 200 users in 10 teams, 10
models on 2 providers and one conversation per 20 records; the records are spread over 90 days
and written by one INSERT … SELECT over generate_series (never a Python loop), then the daily
roll-ups are rebuilt in the database (usage_rollups_rebuild) and the tables analyzed. Pages are
rendered in-process through Django's test client, as staff or as a team admin, in interleaved
rounds (so a slow moment on a shared machine hurts both sizes alike), and the median is kept.

BENCH_DATABASE_URL (else TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432) names the
server; the database name in it is ignored.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

USERS = 200
TEAMS = 10
MODELS = 10
DAYS = 90
RECORDS_PER_CONVERSATION = 20


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(_with_db(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


def _use(name: str) -> None:
    """Point Django's default connection at one of the benchmark's databases."""
    from django.db import connections

    connection = connections["default"]
    connection.close()
    connection.settings_dict["NAME"] = name
    connection.ensure_connection()


def _populate(records: int) -> dict[str, object]:
    """Users, teams, models and conversations through the ORM (a few thousand rows), then the
    records in one statement, then the roll-ups. Returns what the pages are asked for."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from conversations.models import Conversation
    from providers.models import ChatModel, Provider
    from teams.models import Membership, Team
    from usage.models import UsageRecord
    from usage.services import usage_rollups_rebuild

    User = get_user_model()
    staff = User.objects.create_superuser("bench-staff", "staff@example.com", "unused-password")
    users = User.objects.bulk_create(
        [User(username=f"user{n:03}", email=f"user{n:03}@example.com") for n in range(USERS)]
    )
    teams = Team.objects.bulk_create([Team(name=f"Team {n}") for n in range(TEAMS)])
    Membership.objects.bulk_create(
        [
            Membership(
                team=teams[n % TEAMS],
                user=user,
                role=Membership.Role.ADMIN if n < TEAMS else Membership.Role.MEMBER,
            )
            for n, user in enumerate(users)
        ]
    )
    providers = [
        Provider.objects.create(name=f"Provider {n}", base_url="http://127.0.0.1:9/v1")
        for n in range(2)
    ]
    models = [
        ChatModel.objects.create(
            provider=providers[n % 2],
            name=f"model-{n}",
            input_price_per_mtok=0.15 * (n + 1),
            output_price_per_mtok=0.6 * (n + 1),
        )
        for n in range(MODELS)
    ]
    conversations = max(1, records // RECORDS_PER_CONVERSATION)
    now = timezone.now()
    Conversation.objects.bulk_create(
        [
            Conversation(
                owner=users[n % USERS],
                team=teams[(n % USERS) % TEAMS],
                model=models[n % MODELS],
                created_at=now
                - timedelta(days=DAYS * ((n * 7919) % conversations) / conversations),
            )
            for n in range(conversations)
        ],
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        # Each conversation's calls fall within two days of its start, as real ones do.
        cursor.execute(
            f"""
            WITH conv AS (
                SELECT row_number() OVER (ORDER BY c.created_at, c.id) - 1 AS n, c.id,
                       c.owner_id, c.team_id, c.created_at, u.username, t.name AS team_name
                FROM conversations_conversation c
                JOIN auth_user u ON u.id = c.owner_id
                JOIN teams_team t ON t.id = c.team_id
            ),
            model AS (
                SELECT row_number() OVER (ORDER BY m.id) - 1 AS n, m.id, m.name, m.provider_id,
                       p.name AS provider_name, m.input_price_per_mtok, m.output_price_per_mtok
                FROM providers_chatmodel m JOIN providers_provider p ON p.id = m.provider_id
            ),
            g AS (
                SELECT g, random() AS r_time, random() AS r_out, random() AS r_prompt,
                       random() AS r_completion, random() AS r_ttft
                FROM generate_series(1, %s) AS g
            )
            INSERT INTO {UsageRecord._meta.db_table} (
                call_id, kind, started_at, user_id, username, team_id, team_name,
                conversation_id, provider_id, provider_name, model_id, model_name,
                prompt_tokens, completion_tokens, tokens_estimated, input_price_per_mtok,
                output_price_per_mtok, cost, ttft_ms, duration_ms, outcome, error_kind, retries
            )
            SELECT 'bench:' || g.g, 'reply',
                   LEAST(conv.created_at + g.r_time * interval '2 days', now()),
                   conv.owner_id, conv.username, conv.team_id, conv.team_name, conv.id,
                   model.provider_id, model.provider_name, model.id, model.name,
                   p.prompt, p.completion, false, model.input_price_per_mtok,
                   model.output_price_per_mtok,
                   (p.prompt * model.input_price_per_mtok
                    + p.completion * model.output_price_per_mtok) / 1000000,
                   CASE WHEN g.r_out < 0.05 THEN NULL ELSE 150 + (g.r_ttft ^ 2 * 4000)::int END,
                   2000 + (g.r_ttft * 20000)::int,
                   CASE WHEN g.r_out < 0.05 THEN 'error' WHEN g.r_out < 0.08 THEN 'stopped'
                        WHEN g.r_out < 0.09 THEN 'interrupted' ELSE 'complete' END,
                   CASE WHEN g.r_out < 0.05 THEN 'server' ELSE '' END,
                   CASE WHEN g.r_out < 0.02 THEN 1 ELSE 0 END
            FROM g
            JOIN conv ON conv.n = (g.g::bigint * 7919) %% %s
            JOIN model ON model.n = (g.g::bigint * 31 + conv.n) %% {MODELS}
            CROSS JOIN LATERAL (
                SELECT CASE WHEN g.r_out < 0.05 THEN 0 ELSE 100 + (g.r_prompt * 6000)::int END
                           AS prompt,
                       CASE WHEN g.r_out < 0.05 THEN 0 ELSE 20 + (g.r_completion * 1500)::int END
                           AS completion
            ) p
            """,
            [records, conversations],
        )
    usage_rollups_rebuild()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    team = teams[3]
    admin = Membership.objects.filter(team=team, role=Membership.Role.ADMIN).first().user
    return {
        "staff": staff,
        "team_admin": admin,
        "team": team,
        "model": models[4],
        "user": users[17],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    server = os.environ.get(
        "BENCH_DATABASE_URL",
        os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
    )
    names = {size: f"bench_usage_{size}_{os.getpid()}" for size in (args.baseline, args.records)}
    for name in names.values():
        _admin(server, f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = _with_db(server, names[args.baseline])
    os.environ["DATABASE_POOL"] = "0"
    os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    try:
        run(names, args.repeat)
    finally:
        from django.db import connections

        connections.close_all()
        for name in names.values():
            _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(names: dict[int, str], repeat: int) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.utils import timezone

    setup_test_environment()  # the test client's host, and no manifest needed for static URLs
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }

    pages: dict[int, dict[str, tuple[Client, str]]] = {}
    for size, name in names.items():
        _use(name)
        call_command("migrate", verbosity=0)
        began = time.perf_counter()
        setup = _populate(size)
        print(f"{size:>9,} records: generated and rolled up in {time.perf_counter() - began:.1f} s")
        staff, team_admin = Client(), Client()
        staff.force_login(setup["staff"])
        team_admin.force_login(setup["team_admin"])
        # As the admin's own date filter writes them: aware datetimes, URL-encoded.
        midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        since = quote((midnight - timedelta(days=29)).isoformat(sep=" "))
        until = quote((midnight + timedelta(days=1)).isoformat(sep=" "))
        admin_list = "/admin/usage/usagerecord/"
        pages[size] = {
            "dashboard, 30 days, by model (staff)": (staff, "/usage/"),
            "dashboard, 30 days, by user (staff)": (staff, "/usage/?stack=user"),
            "dashboard, 30 days, one team (team admin)": (team_admin, "/usage/"),
            "dashboard CSV, 30 days (staff)": (staff, "/usage/export.csv"),
            "admin list, one model, last 30 days": (
                staff,
                f"{admin_list}?model__id__exact={setup['model'].pk}"
                f"&started_at__gte={since}&started_at__lt={until}",
            ),
            "admin list, one user": (staff, f"{admin_list}?user__id__exact={setup['user'].pk}"),
            "admin list, errors, one team": (
                staff,
                f"{admin_list}?outcome__exact=error&team__id__exact={setup['team'].pk}",
            ),
        }

    def fetch(size: int, page: str) -> float:
        client, url = pages[size][page]
        began = time.perf_counter()
        response = client.get(url)
        elapsed = time.perf_counter() - began
        assert response.status_code == 200, (url, response.status_code)
        return elapsed

    sizes = list(names)
    labels = list(pages[sizes[0]])
    times = {(size, page): [] for size in sizes for page in labels}
    for size in sizes:  # warm up: plans, templates, caches
        _use(names[size])
        for page in labels:
            fetch(size, page)
    for _ in range(repeat):
        for size in sizes:
            _use(names[size])
            for page in labels:
                times[(size, page)].append(fetch(size, page))

    small, large = sizes
    print(f"\nusage pages, median of {repeat} interleaved rounds, PostgreSQL")
    print(f"{'page':<44} {small:>9,} {large:>11,}   ratio (target < 3x)")
    worst = 0.0
    for page in labels:
        base = statistics.median(times[(small, page)])
        big = statistics.median(times[(large, page)])
        ratio = big / base
        worst = max(worst, ratio)
        print(f"{page:<44} {base * 1000:>7.1f} ms {big * 1000:>7.1f} ms   {ratio:5.2f}x")
    print(f"\nworst ratio: {worst:.2f}x ({'within' if worst < 3 else 'OVER'} the 3x target)")


if __name__ == "__main__":
    main()
