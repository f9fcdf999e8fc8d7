from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from tests.fake_upstream import FakeUpstream, Script

DEFAULT_REPLY = Script.stream(["Hello", ", ", "world", "!"])


@pytest.fixture(scope="session")
def _fake_upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake_upstream(_fake_upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    """The project's fake OpenAI-compatible upstream, reset for each test."""
    _fake_upstream_server.reset()
    _fake_upstream_server.default = DEFAULT_REPLY
    _fake_upstream_server.api_key = None
    yield _fake_upstream_server
    _fake_upstream_server.reset()


@pytest.fixture(autouse=True)
def _no_generated_titles(settings) -> None:
    """The title call after a first exchange is one more upstream request, which would take a
    script queued for the next reply; tests of titles turn it back on."""
    settings.CHAT_GENERATED_TITLES = False


@pytest.fixture(scope="session", autouse=True)
def _close_worker_thread_connections(request: pytest.FixtureRequest) -> Iterator[None]:
    """Let the test database be dropped at the end.

    Writes that run through database_sync_to_async(thread_sensitive=False) leave connections in
    executor threads that this thread cannot close; on PostgreSQL, end them before pytest-django
    drops the database (this fixture is set up after it, so it is torn down before).
    """
    if not request.config.pluginmanager.hasplugin("django"):
        yield
        return
    request.getfixturevalue("django_db_setup")
    blocker = request.getfixturevalue("django_db_blocker")
    yield
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection, connections

    def end_other_sessions() -> None:
        # In a thread of its own: browser tests leave an event loop marked running in this one.
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        finally:
            connections.close_all()

    if connection.vendor == "postgresql":
        with blocker.unblock(), ThreadPoolExecutor(1) as pool:
            try:
                pool.submit(end_other_sessions).result()
            except Exception as exc:  # only a courtesy to the teardown that follows
                warnings.warn(f"could not end other database sessions: {exc}", stacklevel=1)
