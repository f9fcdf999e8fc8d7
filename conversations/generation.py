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
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import aclosing
from dataclasses import replace
from typing import Protocol, TypeVar
from uuid import UUID

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from conversations import selectors, services, summaries
from conversations.errors import ChatError
from conversations.frames import context_frame, reply_done_frame, title_frame
from conversations.history import SummaryWork
from conversations.models import Message
from conversations.titles import TitlePlan, clean_title, title_request
from conversations.tokens import count_tokens, message_tokens
from providers.client import ChatRequest, stream_chat
from providers.events import (
    Finish,
    ReasoningDelta,
    Retry,
    TextDelta,
    ToolCalls,
    UpstreamError,
    Usage,
)
from usage.meter import CallMeter
from usage.services import related_call_context, usage_record_call

logger = logging.getLogger(__name__)
T = TypeVar("T")
# The socket that starts a reply announces it within milliseconds (see Generation.announce).
ANNOUNCE_TIMEOUT = 10.0  # seconds


# Writes that need no shared transaction run off the single "thread-sensitive" thread, which
# would otherwise queue every stream's flush behind every other (see PERF-NOTES).
def db_write(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    return database_sync_to_async(func, thread_sensitive=False)


# Reads that need no shared transaction, likewise.
db_read = db_write

SUMMARIZING_TEXT = "Summarizing earlier messages…"


class Subscriber(Protocol):
    async def send_text_frame(self, text: str) -> None: ...


class _Outlet:
    """One way frames leave a generation (to this process's sockets, or to other processes).

    Each keeps its own position in the parts: a frame carries parts ``from``..``seq`` and the
    next one starts where it ended. Parts arriving faster than ``interval`` wait and go out
    together; the first part after a quiet spell goes out at once.
    """

    def __init__(
        self,
        generation: Generation,
        interval: float,
        send: Callable[[dict], Awaitable[None]],
        schedule: Callable[[Coroutine[None, None, None]], None] | None = None,
    ) -> None:
        self.generation = generation
        self.interval = interval
        self.send = send
        # How a delayed emit is run: by default as a task of its own; the remote outlet passes
        # the hub's ordered outbox so that frames to other processes never overtake each other.
        self._schedule = schedule or self._as_task
        self.sent = 0
        self._last_at = -interval
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Future[None] | None = None

    def poke(self) -> Awaitable[None] | None:
        """Called after a part arrives: a send to await now, or None when one is scheduled."""
        if not self.generation.open:
            return None  # sent when it opens (Generation._open_when_ready)
        loop = asyncio.get_running_loop()
        waited = loop.time() - self._last_at
        if waited >= self.interval:
            return self.emit()
        if self._timer is None:
            self._timer = loop.call_later(self.interval - waited, self._emit_later)
        return None

    async def emit(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        parts = len(self.generation.parts)
        if self.sent == parts:
            return
        frame = self.generation.delta_since(self.sent, parts)
        self.sent = parts
        self._last_at = asyncio.get_running_loop().time()
        await self.send(frame)

    def _emit_later(self) -> None:
        self._timer = None
        self.emit_soon()

    def emit_soon(self) -> None:
        self._schedule(self.emit())

    def _as_task(self, emit: Coroutine[None, None, None]) -> None:
        # Kept so the task is not garbage-collected while it sends.
        self._task = asyncio.ensure_future(emit)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Generation:
    def __init__(
        self,
        plan: services.GenerationPlan,
        *,
        hub: ConversationHub,
    ) -> None:
        self.plan = plan
        self.conversation_id = plan.conversation_id
        self.reply_id = plan.reply_id
        self.hub = hub
        # Everything streamed so far, as (field, text) parts; a frame's seq is a part count.
        self.parts: list[tuple[str, str]] = []
        self.task: asyncio.Task[None] | None = None
        self.stop_requested = False
        # Tokens reach the pages only once they have the (empty) reply they belong to
        # (announced), and the "context" frame that comes before the reply's first words.
        self.announced = False
        self._announced = asyncio.Event()
        self._context_told = False
        self._context_task: asyncio.Future[None] | None = None
        self.open = False
        self.local = _Outlet(self, settings.CHAT_FRAME_INTERVAL, self._send_local)
        # Other processes get fewer, larger frames: each costs several Redis round trips.
        self.remote = (
            _Outlet(
                self,
                settings.CHAT_REMOTE_FRAME_INTERVAL,
                self._send_remote,
                schedule=hub.publish_soon,
            )
            if hub.cross_process
            else None
        )
        self._last_flush_at = 0.0
        self._flush_task: asyncio.Task[None] | None = None
        # A "reply.status" frame while the reply waits on something other than its tokens
        # (summarizing earlier messages), for sockets that join meanwhile.
        self.status_frame: dict | None = None
        self.estimated_prompt_tokens = plan.estimated_prompt_tokens
        # Retries, time to first token and reported usage, for the call's usage record.
        self.meter = CallMeter(plan.usage) if plan.usage is not None else None
        if self.meter is not None:
            self.meter.sent = False  # until the request goes out (see run)
        # A summary call under way, recorded as stopped if the reply is stopped during it.
        self._summary_meter: CallMeter | None = None

    # --- state -----------------------------------------------------------------------------
    def text_of(self, field: str, upto: int | None = None) -> str:
        return "".join(text for f, text in self.parts[:upto] if f == field)

    def snapshot_frame(self, seq: int | None = None) -> dict:
        """The reply as far as it has been sent to this process's sockets (or to ``seq``).

        Not as far as it has arrived: parts waiting to be coalesced go out in the next delta,
        whose ``from`` is this snapshot's ``seq``, so a socket that joins now sees no repeat.
        """
        seq = self.local.sent if seq is None else seq
        return {
            "type": "reply.snapshot",
            "conversation": str(self.conversation_id),
            "message": self.reply_id,
            "seq": seq,
            "content": self.text_of("content", seq),
            "reasoning": self.text_of("reasoning", seq),
        }

    def delta_since(self, seq: int, end: int | None = None) -> dict:
        """The parts from ``seq`` to ``end`` (default: as far as sent locally) as one frame."""
        end = self.local.sent if end is None else end
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

    def resume_frame(self, *, message: object, seq: object, for_remote: bool) -> dict:
        """What a socket that says it holds ``seq`` parts of ``message`` is missing."""
        end = self.remote.sent if (for_remote and self.remote) else self.local.sent
        if message == self.reply_id and isinstance(seq, int) and 0 <= seq <= end:
            return self.delta_since(seq, end)
        return self.snapshot_frame(end)

    # --- sending ---------------------------------------------------------------------------
    def announce(self) -> None:
        """The pages have the reply now: send what arrived meanwhile, and the rest as it comes.

        Not async, so that a caller's ``finally`` always runs it to the end."""
        if self.announced:
            return
        self.announced = True
        self._announced.set()
        self._open_when_ready()

    def _open_when_ready(self) -> None:
        if self.open or not (self.announced and self._context_told):
            return
        self.open = True
        if self.local.sent < len(self.parts):
            self.local.emit_soon()
        if self.remote is not None and self.remote.sent < len(self.parts):
            self.remote.emit_soon()

    async def _until_announced(self) -> None:
        # Should a caller never announce (a bug), the reply still ends for the pages.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ANNOUNCE_TIMEOUT):
                await self._announced.wait()

    async def _tell(self, frame: dict) -> None:
        """A frame about this reply, to every page, once they have the reply."""
        await self._until_announced()
        await self.hub.broadcast(self.conversation_id, frame)

    async def _send_local(self, frame: dict) -> None:
        await self.hub.broadcast_local(self.conversation_id, frame)

    async def _send_remote(self, frame: dict) -> None:
        await self.hub.publish(self.conversation_id, frame)

    async def _append(self, field: str, text: str) -> None:
        if not text:
            return
        self.parts.append((field, text))
        if (send := self.local.poke()) is not None:
            await send
        if self.remote is not None and (send := self.remote.poke()) is not None:
            # Not awaited here: Redis round trips must not hold up this process's sockets.
            self.hub.publish_soon(send)
        now = asyncio.get_running_loop().time()
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
            request = await self._prepare()
            if self.meter is not None:
                self.meter.begin()
            # aclosing: on Stop the stream is closed at once, which closes the upstream request.
            async with aclosing(stream_chat(self.plan.config, request)) as events:
                async for event in events:
                    if self.meter is not None:
                        self.meter.observe(event)
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
        except ChatError as exc:  # the request could not be built (told to the user as it is)
            error = UpstreamError(kind="bad_request", message=exc.message)
        except Exception as exc:  # a bug must still leave the reply closed, not "streaming"
            logger.exception("generation for reply %s failed", self.reply_id)
            error = UpstreamError(kind="internal", message=f"Internal error: {type(exc).__name__}")
        finally:
            heartbeat.cancel()
            self.status_frame = None
        if error is not None:
            has_text = any(field == "content" for field, _ in self.parts)
            interrupted = has_text and error.kind in {"interrupted", "timeout", "stream_error"}
            status = Message.Status.INTERRUPTED if interrupted else Message.Status.ERROR
        await self._finish(status, finish_reason, error, usage, tool_calls)

    async def _prepare(self) -> ChatRequest:
        """The request to send: after writing the summaries the plan asks for, if any. Then
        every page showing the conversation learns where the model's view of it begins."""
        request = self.plan.request
        if self.plan.summarize is not None:
            request = await self._summarize(self.plan.summarize)
        # Read and sent beside the upstream request rather than before it: the first token
        # need not wait for it.
        self._context_task = asyncio.ensure_future(self._tell_context())
        return request

    async def _tell_context(self) -> None:
        try:
            frame = await db_read(context_frame)(self.conversation_id, self.reply_id)
            await self._tell(frame)
        except Exception:
            logger.exception("could not tell the context of reply %s", self.reply_id)
        finally:
            self._context_told = True
            self._open_when_ready()

    async def _summarize(self, work: SummaryWork) -> ChatRequest:
        """Fold the turns that no longer fit into the summary, one call per step (each stored as
        it arrives, so a later failure keeps the progress), then build the request around it.
        A failed call falls back to leaving those turns out, and the reply says so."""
        self.status_frame = {
            "type": "reply.status",
            "conversation": str(self.conversation_id),
            "message": self.reply_id,
            "status": "summarizing",
            "text": SUMMARIZING_TEXT,
        }
        await self._tell(self.status_frame)
        summary_id = work.base_summary_id
        failure = ""
        for index, step in enumerate(work.steps):
            previous, source = await db_read(selectors.summary_source)(
                summary_id=summary_id, message_ids=step.message_ids
            )
            if not source:
                continue
            request = summaries.summary_request(
                model=work.summarizer_name,
                previous=previous,
                messages=source,
                max_tokens=work.max_tokens,
                input_tokens=work.input_tokens,
            )
            meter = await self._summary_call_meter(work, index, request)
            result = await summaries.write_summary(
                work.config, request, observe=meter.observe if meter else None
            )
            call = None
            if meter is not None:
                call = meter.result(
                    outcome="error" if result.error else "complete", completion_text=result.text
                )
            if result.error:
                logger.warning("summary for reply %s failed: %s", self.reply_id, result.error)
                failure = result.error
                if call is not None:
                    await db_write(usage_record_call)(call=call)
                self._summary_meter = None
                break
            summary_id = await db_write(services.summary_store)(
                work=work, step=step, previous_id=summary_id, result=result, call=call
            )
            self._summary_meter = None
        self.status_frame = None
        context = await db_write(services.reply_context_build)(
            reply_id=self.reply_id, work=work, summary_id=summary_id, failure=failure
        )
        self.estimated_prompt_tokens = context.estimated_prompt_tokens
        if self.meter is not None:
            # The reply's own call is charged by the request it really sends.
            self.meter.context = replace(
                self.meter.context, estimated_prompt_tokens=context.estimated_prompt_tokens
            )
        return ChatRequest(
            model=self.plan.request.model,
            messages=context.messages,
            params=self.plan.request.params,
        )

    async def _summary_call_meter(
        self, work: SummaryWork, index: int, request: ChatRequest
    ) -> CallMeter | None:
        if self.plan.usage is None:
            return None
        context = await db_read(related_call_context)(
            parent=self.plan.usage,
            call_id=f"summary:{self.reply_id}:{index}",
            kind="summary",
            chat_model_id=work.summarizer_id,
            estimated_prompt_tokens=sum(message_tokens(m["content"]) for m in request.messages),
        )
        self._summary_meter = CallMeter(context)
        return self._summary_meter

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
        # The end of the reply must not reach the pages before the reply itself.
        await self._until_announced()
        if self._context_task is not None:
            await asyncio.gather(self._context_task, return_exceptions=True)
        self.local.close()
        await self.local.emit()
        if self.remote is not None:
            self.remote.close()
            self.hub.publish_soon(self.remote.emit())
        content = self.text_of("content")
        if tool_calls is not None and tool_calls.calls:
            content += _describe_tool_calls(tool_calls)
        if self._summary_meter is not None:
            # Stopped (or failed) while a summary was being written: that call ends here too.
            cut = self._summary_meter.result(
                outcome="stopped" if status == Message.Status.STOPPED else "error",
                error_kind="" if status == Message.Status.STOPPED else "internal",
            )
            self._summary_meter = None
            try:
                await db_write(usage_record_call)(call=cut)
            except Exception:
                logger.exception("could not record the summary call of reply %s", self.reply_id)
        call = None
        if self.meter is not None:
            call = self.meter.result(
                outcome=status,
                error_kind=error.kind if error else "",
                completion_text=self.text_of("content") + self.text_of("reasoning"),
            )
        try:
            frame = await db_write(_close_reply)(
                reply_id=self.reply_id,
                content=content,
                reasoning=self.text_of("reasoning"),
                status=status,
                finish_reason=finish_reason,
                error_kind=error.kind if error else "",
                error=error.message if error else "",
                usage=usage,
                call=call,
            )
        except Exception:
            logger.exception("could not store the end of reply %s", self.reply_id)
            frame = {
                "type": "error",
                "code": "internal",
                "message": "The reply could not be saved.",
            }
        finally:
            self.hub.forget(self)
        # Before the pages hear the reply ended: the next message must see the correction.
        await self._learn_from(usage)
        await self.hub.broadcast(self.conversation_id, frame)
        if status == Message.Status.COMPLETE and self.plan.title is not None and content.strip():
            # After the reply is shown and stored: the title never delays the answer.
            self.hub.spawn(self._write_title(self.plan.title, content))

    async def _write_title(self, plan: TitlePlan, answer: str) -> None:
        request = title_request(plan, answer)
        prompt = sum(message_tokens(m["content"]) for m in request.messages)
        meter = None
        if self.plan.usage is not None and plan.chat_model_id is not None:
            # Charged like the reply it names: same user, team and conversation.
            meter = CallMeter(
                await db_read(related_call_context)(
                    parent=self.plan.usage,
                    call_id=f"title:{self.reply_id}",
                    kind="title",
                    chat_model_id=plan.chat_model_id,
                    estimated_prompt_tokens=prompt,
                )
            )
            meter.begin()
        text = ""
        usage: Usage | None = None
        failed = ""
        async with aclosing(stream_chat(plan.config, request)) as events:
            async for event in events:
                if meter is not None:
                    meter.observe(event)
                if isinstance(event, TextDelta):
                    text += event.text
                elif isinstance(event, Usage):
                    usage = event
                elif isinstance(event, UpstreamError):
                    logger.info("no title for %s: %s", self.conversation_id, event.message)
                    failed = event.kind
        call = None
        if meter is not None:
            call = meter.result(
                outcome="error" if failed else "complete", error_kind=failed, completion_text=text
            )
        if failed:
            text = ""
        reported = usage if usage is not None and usage.prompt_tokens is not None else None
        frame = await db_write(_store_title)(
            conversation_id=self.conversation_id,
            user_id=self.plan.user_id,
            title=clean_title(text),
            chat_model_id=plan.chat_model_id,
            model_name=plan.model,
            prompt_tokens=reported.prompt_tokens if reported else prompt,
            completion_tokens=(
                reported.completion_tokens
                if reported and reported.completion_tokens is not None
                else count_tokens(text)
            ),
            estimated=reported is None,
            call=call,
        )
        if frame is not None:
            await self.hub.broadcast(self.conversation_id, frame)

    async def _learn_from(self, usage: Usage | None) -> None:
        """Correct the model's token estimate by what its provider counted for this prompt."""
        if usage is None or not usage.prompt_tokens or self.plan.chat_model_id is None:
            return
        try:
            await db_write(services.token_ratio_observe)(
                chat_model_id=self.plan.chat_model_id,
                estimated=self.estimated_prompt_tokens,
                reported=usage.prompt_tokens,
            )
        except Exception:
            logger.exception("could not record the token usage of reply %s", self.reply_id)


def _close_reply(**fields: object) -> dict:
    """Sync: store the end of a reply and render the frame that tells the pages (one hop)."""
    return reply_done_frame(services.reply_finish(**fields))  # type: ignore[arg-type]


def _store_title(**fields: object) -> dict | None:
    """Sync: keep the title call's result; the frame that tells open pages, if it changed."""
    conversation = services.conversation_title_generated(**fields)  # type: ignore[arg-type]
    return None if conversation is None else title_frame(conversation)


def _describe_tool_calls(tool_calls: ToolCalls) -> str:
    # This product does not run tools; it shows what the model asked for.
    lines = ["", "", "**The model asked to call tools** (not run by this app):", ""]
    for call in tool_calls.calls:
        lines.append(f"- `{call.name or 'unnamed tool'}` with arguments:")
        lines.append("")
        lines.append("  ```json")
        lines.extend(f"  {line}" for line in _readable_arguments(call.arguments).splitlines())
        lines.append("  ```")
    return "\n".join(lines)


def _readable_arguments(arguments: str) -> str:
    """Arguments indented when they are JSON; as the model wrote them when they are not."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return arguments
    return json.dumps(parsed, indent=2, ensure_ascii=False)


class ConversationHub:
    """This process's view of live conversations: the sockets showing each one, and the
    generations running here.

    Frames go straight to this process's sockets. With a channel layer that crosses processes
    (channels-redis), they are also published to the group ``conv.<id>``, which every socket
    showing the conversation in any process joins; and the hub joins ``gen.<id>`` while it runs
    that conversation's generation, to hear Stop and resume requests from other processes.
    """

    def __init__(self) -> None:
        self._watchers: dict[UUID, set[Subscriber]] = {}
        self._running: dict[UUID, Generation] = {}
        self.channel_name: str | None = None
        self._layer: BaseChannelLayer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[Awaitable[None]] | None = None
        # Work that follows a generation (the title call); kept so tasks are not collected.
        self._background: set[asyncio.Task[None]] = set()

    # --- the channel layer -----------------------------------------------------------------
    @property
    def cross_process(self) -> bool:
        return self._layer is not None

    async def ensure_started(self) -> None:
        """Join the channel layer if it crosses processes. Idempotent; per event loop."""
        loop = asyncio.get_running_loop()
        if self._reader is not None and self._reader.get_loop() is loop and not self._reader.done():
            return
        # Another event loop (tests run one per test): nothing of the last one's can be used.
        self._reader = self._publisher = self._outbox = None
        self.channel_name = None
        layer = get_channel_layer()
        if layer is None or isinstance(layer, InMemoryChannelLayer):
            # One process: every socket is local, so the layer would only add work.
            self._layer = None
            return
        self._layer = layer
        # The default prefix, like the sockets' channels: channels-redis reads all of a
        # process's channels with one blocking pop per prefix, under one lock, so a channel
        # with a prefix of its own would starve the sockets' channels (and they it).
        self.channel_name = await layer.new_channel()
        self._outbox = asyncio.Queue()
        self._reader = loop.create_task(self._read(), name="hub-reader")
        self._publisher = loop.create_task(self._publish_in_order(), name="hub-publisher")

    async def _read(self) -> None:
        assert self._layer is not None and self.channel_name is not None
        while True:
            try:
                message = await self._layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reading the channel layer failed; retrying")
                await asyncio.sleep(1)
                continue
            try:
                await self._handle(message)
            except Exception:
                logger.exception("handling %s from the channel layer failed", message.get("type"))

    async def _handle(self, message: dict) -> None:
        if message["type"] == "user.revoked":
            self.stop_user(message["user"])
            return
        conversation_id = UUID(message["conversation"])
        generation = self._running.get(conversation_id)
        if generation is None:
            return
        if message["type"] == "chat.stop":
            self.stop(conversation_id)
        elif message["type"] == "chat.resume" and self._layer is not None:
            frame = generation.resume_frame(
                message=message.get("message"), seq=message.get("seq"), for_remote=True
            )
            for each in (frame, generation.status_frame):
                if each is not None:
                    await self._layer.send(
                        message["reply_channel"],
                        {"type": "chat.frame", "origin": "", "frame": each},
                    )

    async def _publish_in_order(self) -> None:
        assert self._outbox is not None
        while True:
            send = await self._outbox.get()
            try:
                await send
            except Exception:
                # A lost frame is repaired by the client's sequence check and a resume.
                logger.warning("publishing a frame to other processes failed", exc_info=True)
            finally:
                self._outbox.task_done()

    def publish_soon(self, send: Awaitable[None]) -> None:
        """Queue a send to other processes; sends run one at a time, in order."""
        if self._outbox is not None:
            self._outbox.put_nowait(send)
        elif asyncio.iscoroutine(send):
            send.close()

    async def publish(self, conversation_id: UUID, frame: dict) -> None:
        if self._layer is None:
            return
        await self._layer.group_send(
            conversation_group(conversation_id),
            {"type": "chat.frame", "origin": self.channel_name, "frame": frame},
        )

    async def request(self, conversation_id: UUID, message: dict) -> None:
        """Ask whichever process runs this conversation's generation (stop, resume)."""
        if self._layer is None:
            return
        await self._layer.group_send(
            generation_group(conversation_id),
            {**message, "conversation": str(conversation_id)},
        )

    # --- sockets ---------------------------------------------------------------------------
    def watch(self, conversation_id: UUID, subscriber: Subscriber) -> None:
        self._watchers.setdefault(conversation_id, set()).add(subscriber)

    def unwatch(self, conversation_id: UUID, subscriber: Subscriber) -> None:
        watchers = self._watchers.get(conversation_id)
        if watchers is None:
            return
        watchers.discard(subscriber)
        if not watchers:
            del self._watchers[conversation_id]

    def watcher_count(self, conversation_id: UUID) -> int:
        return len(self._watchers.get(conversation_id, ()))

    async def broadcast_local(self, conversation_id: UUID, frame: dict) -> None:
        watchers = self._watchers.get(conversation_id)
        if not watchers:
            return
        text = json.dumps(frame, ensure_ascii=False)
        for subscriber in list(watchers):
            try:
                await subscriber.send_text_frame(text)
            except Exception:
                logger.debug("dropping a socket that failed to receive", exc_info=True)
                self.unwatch(conversation_id, subscriber)

    async def broadcast(self, conversation_id: UUID, frame: dict) -> None:
        """To every socket showing the conversation, in this process and the others."""
        await self.broadcast_local(conversation_id, frame)
        if self._layer is not None:
            self.publish_soon(self.publish(conversation_id, frame))

    # --- generations -----------------------------------------------------------------------
    def get(self, conversation_id: UUID) -> Generation | None:
        return self._running.get(conversation_id)

    async def start(self, plan: services.GenerationPlan, *, announced: bool = True) -> Generation:
        """Start streaming a reply. With ``announced=False`` nothing reaches the pages until
        ``generation.announce()``: the upstream request goes out while the caller sends the
        pages the reply itself (its "message" frame)."""
        await self.ensure_started()
        generation = Generation(plan, hub=self)
        if announced:
            generation.announce()
        self._running[plan.conversation_id] = generation
        if self._layer is not None and self.channel_name is not None:
            # To hear Stop and resume requests from other processes, and that the user was
            # deactivated, from whichever process did it. Through the ordered outbox rather than
            # awaited here: the upstream request need not wait for Redis, and the last reply's
            # group_discard (queued there by forget) cannot land after this add and deafen it.
            self.publish_soon(
                self._layer.group_add(generation_group(plan.conversation_id), self.channel_name)
            )
            self.publish_soon(self._layer.group_add(user_group(plan.user_id), self.channel_name))
        generation.task = asyncio.create_task(generation.run(), name=f"reply-{plan.reply_id}")
        return generation

    def stop(self, conversation_id: UUID) -> bool:
        generation = self._running.get(conversation_id)
        if generation is None or generation.task is None or generation.stop_requested:
            return False
        generation.stop_requested = True
        generation.task.cancel()
        return True

    def stop_user(self, user_id: int) -> int:
        """Stop every reply running here for this user (deactivated); safe from any thread."""
        stopped = 0
        for conversation_id, generation in list(self._running.items()):
            if generation.plan.user_id != user_id or generation.task is None:
                continue
            loop = generation.task.get_loop()
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                stopped += self.stop(conversation_id)
            else:
                loop.call_soon_threadsafe(self.stop, conversation_id)
                stopped += 1
        return stopped

    def forget(self, generation: Generation) -> None:
        if self._running.get(generation.conversation_id) is generation:
            del self._running[generation.conversation_id]
        if self._layer is not None and self.channel_name is not None:
            self.publish_soon(
                self._layer.group_discard(
                    generation_group(generation.conversation_id), self.channel_name
                )
            )
            # The user group is left to expire (channels-redis group_expiry): a discard queued
            # here could land after the next start's group_add and deafen a running reply, and
            # a stale membership only delivers a message that finds nothing to stop.

    def spawn(self, work: Awaitable[None]) -> None:
        """Run ``work`` as a task of its own; its failure is logged, never raised."""

        async def guarded() -> None:
            try:
                await work
            except Exception:
                logger.exception("background work after a reply failed")

        task = asyncio.ensure_future(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_all(self) -> None:
        """For tests and shutdown: wait until every running generation (and what follows it,
        such as a title) has ended."""
        while tasks := [
            *(g.task for g in self._running.values() if g.task is not None),
            *self._background,
        ]:
            await asyncio.gather(*tasks, return_exceptions=True)
        publisher, outbox = self._publisher, self._outbox
        running_here = publisher is not None and publisher.get_loop() is asyncio.get_running_loop()
        if running_here and not publisher.done() and outbox is not None:
            await outbox.join()


def conversation_group(conversation_id: UUID) -> str:
    return f"conv.{conversation_id}"


def generation_group(conversation_id: UUID) -> str:
    return f"gen.{conversation_id}"


def user_group(user_id: int) -> str:
    """Every socket of the user, and every process running a reply for them."""
    return f"user.{user_id}"


hub = ConversationHub()
