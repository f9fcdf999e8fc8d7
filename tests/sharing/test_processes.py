"""A link revoked or expired through one server process answers 404 at once on another."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from sharing import services
from sharing.models import Share
from tests.factories import make_chat_model, make_conversation, make_user
from tests.livestack import Daphne

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

CSRF = "c" * 32  # an unmasked secret: the same value in the cookie and the header passes


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the multi-process test needs PostgreSQL (set DATABASE_URL)")
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def two_processes(tmp_path):
    env = {
        "DATABASE_URL": _database_url(),
        "DATABASE_POOL": "0",
        "SECRET_KEY": settings.SECRET_KEY,
        "VAR_DIR": str(tmp_path),
        "DEBUG": "true",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    servers = [Daphne(env).start(), Daphne(env).start()]
    yield servers
    for server in servers:
        server.stop()


def test_revoking_on_one_process_is_seen_at_once_by_the_other(two_processes, fake_upstream):
    first, second = two_processes
    alice = make_user("alice")
    conversation = make_conversation(
        alice, model=make_chat_model(fake_upstream.base_url), title="Across processes", turns=1
    )
    share = services.share_save(conversation=conversation, settings=services.ShareSettings())
    path = f"/s/{share.token}/"
    login = Client()
    login.force_login(alice)
    owner_cookies = {"sessionid": login.cookies["sessionid"].value, "csrftoken": CSRF}

    with httpx.Client(base_url=second.http_url, timeout=30) as viewer:
        # The second process has served the link (and would have cached it, if it cached).
        for _ in range(2):
            assert viewer.get(path).status_code == 200
        with httpx.Client(base_url=first.http_url, cookies=owner_cookies, timeout=30) as owner:
            revoked = owner.post(
                f"/c/{conversation.id}/share/revoke/", headers={"X-CSRFToken": CSRF}
            )
        assert revoked.status_code == 302
        assert viewer.get(path).status_code == 404

        # The same for expiry: a new link, expired by a write from this (third) process.
        renewed = services.share_save(conversation=conversation, settings=services.ShareSettings())
        renewed_path = f"/s/{renewed.token}/"
        assert viewer.get(renewed_path).status_code == 200
        Share.objects.filter(id=renewed.id).update(expires_at=timezone.now() - timedelta(seconds=1))
        assert viewer.get(renewed_path).status_code == 404
