"""Fixtures for the real-browser tests: the app under daphne on its own PostgreSQL database,
the project's fake upstream, and Chromium driven by Playwright's sync API.

These tests never use the ORM or pytest-django's database fixtures: Playwright's sync API keeps
an event loop running in the test thread, where Django refuses ORM calls (and
switching off Django's async-safety check is not an option). Everything goes through the browser, the server
process, or plain SQL (see live_app.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.browser import live_app
from tests.browser.live_app import Account, LiveApp
from tests.fake_upstream import FakeUpstream

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Waits are for events (a reply finishing, a page loading), never a measure of speed: generous.
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)

_reports = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    # Kept so the page fixture knows, at teardown, whether the test failed.
    report = yield
    item.stash.setdefault(_reports, {})[report.when] = report
    return report


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    executable = live_app.chromium_path()
    if executable is None:
        pytest.skip("Debian's chromium is not installed: apt-get install chromium")
    return executable


# Module scope, not session: between its calls Playwright's sync API leaves its event loop marked
# as running in this thread, which breaks every async test that runs after it in the session.
# Stopping it when the module ends hands the thread back to pytest-asyncio.
@pytest.fixture(scope="module")
def browser(chromium_executable: str) -> Iterator[Browser]:
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=chromium_executable, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="session")
def app(
    chromium_executable: str,
    _fake_upstream_server: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveApp]:
    """The site under daphne, on a database made for this run and dropped after it."""
    # chromium_executable comes first: without a browser, skip before anything is started.
    from django.contrib.auth.hashers import make_password

    name = f"chat_e2e_{os.getpid()}"
    database_url = live_app.create_database(name)
    try:
        started = live_app.start(
            database_url, tmp_path_factory.mktemp("e2e-var"), _fake_upstream_server.base_url
        )
        # Hashed here, once: a hash is plain computation, no ORM involved.
        started.password_hash = make_password(live_app.PASSWORD)
        try:
            yield started
        finally:
            live_app.stop(started)
            if started.process.returncode not in (0, -15):
                print(f"daphne exited with {started.process.returncode}:\n{started.log_since()}")
    finally:
        live_app.drop_database(name)


@pytest.fixture
def fake(fake_upstream: FakeUpstream) -> FakeUpstream:
    """The session's fake upstream, reset for this test (see tests/conftest.py)."""
    return fake_upstream


@pytest.fixture
def user(app: LiveApp) -> Account:
    return app.create_user()


@pytest.fixture
def new_page(
    browser: Browser, app: LiveApp, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], Page]]:
    """A factory of pages, each in a fresh browser context (its own cookies). On failure the
    server log written during the test and a screenshot of each page are printed/saved."""
    contexts = []
    log_start = app.log_size()

    def make() -> Page:
        context = browser.new_context(base_url=app.url)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        return page

    yield make
    reports = request.node.stash.get(_reports, {})
    if any(report.failed for report in reports.values()):
        for index, context in enumerate(contexts):
            for page in context.pages:
                path = tmp_path / f"page{index}.png"
                try:
                    page.screenshot(path=path, full_page=True)
                    print(f"screenshot of {page.url}: {path}")
                except Exception as exc:  # the page may be the reason for the failure
                    print(f"no screenshot of {page.url}: {exc}")
        print(f"--- server log during the test ---\n{app.log_since(log_start)}")
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[[], Page]) -> Page:
    return new_page()
