"""The periodic sweep that closes replies whose process died (see CHAT_ORPHAN_AFTER).

Started by the first websocket of each process: daphne runs no lifespan hooks, and a sweep is
only useful where sockets are served anyway. Safe with several processes: live generations touch
their rows every few seconds, so only orphans are old enough to be taken.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

from channels.db import database_sync_to_async
from django.conf import settings

from conversations.frames import reply_done_frame
from conversations.generation import hub
from conversations.services import replies_mark_interrupted

logger = logging.getLogger(__name__)

_task: asyncio.Task[None] | None = None


def sweep_orphans() -> list[dict]:
    """Close orphaned replies; the frames that tell open pages. Sync."""
    closed = replies_mark_interrupted(older_than=settings.CHAT_ORPHAN_AFTER)
    if closed:
        logger.warning("marked %d orphaned replies as interrupted", len(closed))
    return [reply_done_frame(reply) for reply in closed]


async def _sweep_forever() -> None:
    interval = settings.CHAT_ORPHAN_AFTER.total_seconds() / 2
    while True:
        try:
            frames = await database_sync_to_async(sweep_orphans, thread_sensitive=False)()
            for frame in frames:
                await hub.broadcast(UUID(frame["conversation"]), frame)
        except Exception:
            logger.exception("the sweep of orphaned replies failed; trying again later")
        await asyncio.sleep(interval)


def ensure_sweeper() -> None:
    global _task
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _task = loop.create_task(_sweep_forever(), name="orphan-sweep")
