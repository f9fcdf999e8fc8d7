"""A per-read deadline that costs almost nothing when reads are quick.

`async with asyncio.timeout_at(...)` around every read of a stream schedules and cancels a
timer per chunk (about 10 µs each, measured) — a real share of the CPU when hundreds of streams
deliver a token every few milliseconds. ReadDeadline keeps one timer per stream and only moves
a number per read; when the timer fires early it is re-armed for the current deadline.

Same semantics as asyncio.timeout: on expiry the task is cancelled and the cancellation is
turned into TimeoutError where the read was awaited; a cancellation from elsewhere passes
through untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["ReadDeadline"]

T = TypeVar("T")


class ReadDeadline:
    """Use from one task only; call close() when done reading."""

    __slots__ = ("_deadline", "_expired", "_handle", "_loop", "_reading", "_task")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "ReadDeadline needs a running task"
        self._task = task
        self._deadline = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._reading = False
        self._expired = False

    async def read(self, awaitable: Awaitable[T], deadline: float) -> T:
        """Await awaitable; raise TimeoutError if loop.time() reaches deadline first."""
        if self._loop.time() >= deadline:
            # Like asyncio.timeout: an expired deadline fails without waiting at all.
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise TimeoutError
        self._deadline = deadline
        handle = self._handle
        if handle is None or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(deadline, self._on_timer)
        cancelling = self._task.cancelling()
        self._reading = True
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if self._task.uncancel() <= cancelling:
                    raise TimeoutError from None
            raise
        finally:
            self._reading = False

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _on_timer(self) -> None:
        self._handle = None
        if not self._reading:
            return  # the next read() arms a new timer
        if self._loop.time() < self._deadline:
            self._handle = self._loop.call_at(self._deadline, self._on_timer)
            return
        self._expired = True
        self._task.cancel()
