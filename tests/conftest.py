from __future__ import annotations

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
