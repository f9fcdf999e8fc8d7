"""Generations: one upstream reply being streamed into a conversation.

A generation belongs to the conversation, not to a socket: it runs as its own asyncio task in
the process that started it, outlives the socket that asked for it, and is kept in this
process's registry so that any socket opening the conversation can attach to it. Tokens go
straight to the attached sockets (no channel layer on the hot path), coalesced into one frame per
``CHAT_FRAME_INTERVAL`` when they arrive faster than that, the first one at once. The reply is
written to the database when it starts, at most once per ``CHAT_FLUSH_INTERVAL`` while it
streams, and once when it ends — never once per token.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Protocol, TypeVar
from uuid import UUID

from channels.db import database_sync_to_async
from django.conf import settings

from conversations import services
from conversations.frames import reply_done_frame
from conversations.models import Message
from providers.client import stream_chat
from providers.events import (
    Finish,
    ReasoningDelta,
    Retry,
    TextDelta,
    ToolCalls,
    UpstreamError,
    Usage,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


# Writes that need no shared transaction run off the single "thread-sensitive" thread, which
# would otherwise queue every stream's flush behind every other (see PERF-NOTES).
def db_write(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    return database_sync_to_async(func, thread_sensitive=False)


class Subscriber(Protocol):
    async def send_text_frame(self, text: str) -> None: ...


class Generation:
    def __init__(
        self,
        plan: services.GenerationPlan,
        *,
        subscribers: set[Subscriber],
        on_done: Callable[[Generation], None],
    ) -> None:
        self.plan = plan
        self.conversation_id = plan.conversation_id
        self.reply_id = plan.reply_id
        self._on_done = on_done
        # Everything streamed so far, as (field, text) parts; a frame's seq is a part count.
        self.parts: list[tuple[str, str]] = []
        # The hub's live set of sockets showing this conversation (shared, not copied).
        self.subscribers = subscribers
        self.task: asyncio.Task[None] | None = None
        self.stop_requested = False
        self._sent = 0
        self._last_frame_at = 0.0
        self._frame_timer: asyncio.TimerHandle | None = None
        self._emit_task: asyncio.Future[None] | None = None
        self._last_flush_at = 0.0
        self._flush_task: asyncio.Task[None] | None = None

    # --- state -----------------------------------------------------------------------------
    def text_of(self, field: str, upto: int | None = None) -> str:
        return "".join(text for f, text in self.parts[:upto] if f == field)

    def snapshot_frame(self) -> dict:
        """The reply as far as it has been broadcast.

        Not as far as it has arrived: parts waiting to be coalesced go out in the next delta,
        whose ``from`` is this snapshot's ``seq``, so a socket that joins now sees no repeat.
        """
        seq = self._sent
        return {
            "type": "reply.snapshot",
            "conversation": str(self.conversation_id),
            "message": self.reply_id,
            "seq": seq,
            "content": self.text_of("content", seq),
            "reasoning": self.text_of("reasoning", seq),
        }

    def delta_since(self, seq: int, end: int | None = None) -> dict:
        """The parts from ``seq`` to ``end`` (default: as far as broadcast) as one frame."""
        end = self._sent if end is None else end
        seq = max(0, min(seq, end))
        missing = self.parts[seq:end]
        return {
            "type": "reply.delta",
            "conversation": str(self.conversation_id),
            "message": self.reply_id,
            "from": seq,
            "seq": end,
            "content": "".join(t for f, t in missing if f == "content"),
            "reasoning": "".join(t for f, t in missing if f == "reasoning"),
        }

    # --- sending ---------------------------------------------------------------------------
    async def broadcast(self, frame: dict) -> None:
        text = json.dumps(frame, ensure_ascii=False)
        for subscriber in list(self.subscribers):
            try:
                await subscriber.send_text_frame(text)
            except Exception:  # a socket that went away must not stop the reply
                logger.debug("dropping a subscriber that failed to receive", exc_info=True)
                self.subscribers.discard(subscriber)

    async def _emit(self) -> None:
        if self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None
        if self._sent == len(self.parts):
            return
        frame = self.delta_since(self._sent, len(self.parts))
        self._sent = frame["seq"]
        self._last_frame_at = asyncio.get_running_loop().time()
        await self.broadcast(frame)

    def _emit_later(self) -> None:
        self._frame_timer = None
        # Kept so the task is not garbage-collected while it sends.
        self._emit_task = asyncio.ensure_future(self._emit())

    async def _append(self, field: str, text: str) -> None:
        if not text:
            return
        self.parts.append((field, text))
        loop = asyncio.get_running_loop()
        now = loop.time()
        waited = now - self._last_frame_at
        if waited >= settings.CHAT_FRAME_INTERVAL:
            await self._emit()
        elif self._frame_timer is None:
            self._frame_timer = loop.call_later(
                settings.CHAT_FRAME_INTERVAL - waited, self._emit_later
            )
        if now - self._last_flush_at >= settings.CHAT_FLUSH_INTERVAL:
            self._start_flush(now)

    # --- persistence -----------------------------------------------------------------------
    def _start_flush(self, now: float) -> None:
        if self._flush_task is not None and not self._flush_task.done():
            return
        self._last_flush_at = now
        self._flush_task = asyncio.ensure_future(
            db_write(services.reply_flush)(
                reply_id=self.reply_id,
                content=self.text_of("content"),
                reasoning=self.text_of("reasoning"),
            )
        )

    async def _heartbeat(self) -> None:
        # A slow model may send nothing for a long time; touching the row tells the sweep that
        # this reply is alive.
        while True:
            await asyncio.sleep(settings.CHAT_FLUSH_INTERVAL * 5)
            loop = asyncio.get_running_loop()
            if loop.time() - self._last_flush_at >= settings.CHAT_FLUSH_INTERVAL * 5:
                self._start_flush(loop.time())

    # --- the task --------------------------------------------------------------------------
    async def run(self) -> None:
        status = Message.Status.COMPLETE
        finish_reason = ""
        error: UpstreamError | None = None
        usage: Usage | None = None
        tool_calls: ToolCalls | None = None
        heartbeat = asyncio.ensure_future(self._heartbeat())
        self._last_flush_at = asyncio.get_running_loop().time()
        try:
            # aclosing: on Stop the stream is closed at once, which closes the upstream request.
            async with aclosing(stream_chat(self.plan.config, self.plan.request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        await self._append("content", event.text)
                    elif isinstance(event, ReasoningDelta):
                        await self._append("reasoning", event.text)
                    elif isinstance(event, Usage):
                        usage = event
                    elif isinstance(event, ToolCalls):
                        tool_calls = event
                    elif isinstance(event, Finish):
                        finish_reason = event.reason
                    elif isinstance(event, UpstreamError):
                        error = event
                    elif isinstance(event, Retry):
                        logger.info("retrying reply %s upstream: %s", self.reply_id, event.reason)
        except asyncio.CancelledError:
            # Stop was pressed (or the process is shutting down): keep what arrived, and let the
            # final write below run rather than being cancelled too.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            status = Message.Status.STOPPED
            finish_reason = "stopped"
        except Exception as exc:  # a bug must still leave the reply closed, not "streaming"
            logger.exception("generation for reply %s failed", self.reply_id)
            error = UpstreamError(kind="internal", message=f"Internal error: {type(exc).__name__}")
        finally:
            heartbeat.cancel()
        if error is not None:
            has_text = any(field == "content" for field, _ in self.parts)
            interrupted = has_text and error.kind in {"interrupted", "timeout", "stream_error"}
            status = Message.Status.INTERRUPTED if interrupted else Message.Status.ERROR
        await self._finish(status, finish_reason, error, usage, tool_calls)

    async def _finish(
        self,
        status: str,
        finish_reason: str,
        error: UpstreamError | None,
        usage: Usage | None,
        tool_calls: ToolCalls | None,
    ) -> None:
        if self._flush_task is not None:
            # The last flush must not land after (and overwrite) the final write.
            await asyncio.gather(self._flush_task, return_exceptions=True)
        await self._emit()
        content = self.text_of("content")
        if tool_calls is not None and tool_calls.calls:
            content += _describe_tool_calls(tool_calls)
        try:
            reply = await db_write(services.reply_finish)(
                reply_id=self.reply_id,
                content=content,
                reasoning=self.text_of("reasoning"),
                status=status,
                finish_reason=finish_reason,
                error_kind=error.kind if error else "",
                error=error.message if error else "",
                usage=usage,
            )
            frame = await db_write(reply_done_frame)(reply)
        except Exception:
            logger.exception("could not store the end of reply %s", self.reply_id)
            frame = {
                "type": "error",
                "code": "internal",
                "message": "The reply could not be saved.",
            }
        finally:
            self._on_done(self)
        await self.broadcast(frame)


def _describe_tool_calls(tool_calls: ToolCalls) -> str:
    # This product does not run tools; it shows what the model asked for.
    lines = ["", "", "**The model asked to call tools** (not run by this app):", ""]
    for call in tool_calls.calls:
        lines.append(f"- `{call.name}` with arguments:")
        lines.append("")
        lines.append("  ```json")
        lines.extend(f"  {line}" for line in (call.arguments or "{}").splitlines())
        lines.append("  ```")
    return "\n".join(lines)


class ConversationHub:
    """This process's view of live conversations: the sockets showing each one, and the
    generations running here. Frames for a conversation go to every socket showing it."""

    def __init__(self) -> None:
        self._watchers: dict[UUID, set[Subscriber]] = {}
        self._running: dict[UUID, Generation] = {}

    # --- sockets ---------------------------------------------------------------------------
    def watch(self, conversation_id: UUID, subscriber: Subscriber) -> None:
        self._watchers.setdefault(conversation_id, set()).add(subscriber)

    def unwatch(self, conversation_id: UUID, subscriber: Subscriber) -> None:
        watchers = self._watchers.get(conversation_id)
        if watchers is None:
            return
        watchers.discard(subscriber)
        if not watchers and conversation_id not in self._running:
            del self._watchers[conversation_id]

    def watcher_count(self, conversation_id: UUID) -> int:
        return len(self._watchers.get(conversation_id, ()))

    async def broadcast(self, conversation_id: UUID, frame: dict) -> None:
        text = json.dumps(frame, ensure_ascii=False)
        for subscriber in list(self._watchers.get(conversation_id, ())):
            try:
                await subscriber.send_text_frame(text)
            except Exception:
                logger.debug("dropping a socket that failed to receive", exc_info=True)
                self.unwatch(conversation_id, subscriber)

    # --- generations -----------------------------------------------------------------------
    def get(self, conversation_id: UUID) -> Generation | None:
        return self._running.get(conversation_id)

    def start(self, plan: services.GenerationPlan) -> Generation:
        generation = Generation(
            plan,
            subscribers=self._watchers.setdefault(plan.conversation_id, set()),
            on_done=self._forget,
        )
        self._running[plan.conversation_id] = generation
        generation.task = asyncio.create_task(generation.run(), name=f"reply-{plan.reply_id}")
        return generation

    def stop(self, conversation_id: UUID) -> bool:
        generation = self._running.get(conversation_id)
        if generation is None or generation.task is None or generation.stop_requested:
            return False
        generation.stop_requested = True
        generation.task.cancel()
        return True

    def _forget(self, generation: Generation) -> None:
        if self._running.get(generation.conversation_id) is generation:
            del self._running[generation.conversation_id]

    async def wait_all(self) -> None:
        """For tests and shutdown: wait until every running generation has ended."""
        while tasks := [g.task for g in self._running.values() if g.task is not None]:
            await asyncio.gather(*tasks, return_exceptions=True)


hub = ConversationHub()
