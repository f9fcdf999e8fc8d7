"""Signing websockets in without queueing them behind each other.

channels' AuthMiddleware loads the session and the user through ``database_sync_to_async`` with
its default ``thread_sensitive=True``: every handshake of the process waits its turn on one
thread. When hundreds of pages reconnect at once (a restart, a network blip) the last ones wait
for all the others and can run past daphne's handshake timeout. The lookup needs no shared
transaction, so it may run on any worker thread.
"""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddleware, CookieMiddleware, SessionMiddleware, get_user
from channels.db import database_sync_to_async

# get_user is channels' own function wrapped for the sync thread; .func is the function itself.
_get_user = database_sync_to_async(get_user.func, thread_sensitive=False)


class ParallelAuthMiddleware(AuthMiddleware):
    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        scope["user"]._wrapped = await _get_user(scope)


def AuthMiddlewareStack(inner: Any) -> CookieMiddleware:  # channels' name for it
    return CookieMiddleware(SessionMiddleware(ParallelAuthMiddleware(inner)))
