"""The chat websocket: a thin adapter between browser frames and the services.

One socket per page. It parses a frame, authorizes through the selectors, calls a service, and
starts or stops a generation in the hub; the generation (not this socket) streams the reply, so
closing the socket never stops a reply. The protocol is documented in docs/websocket-protocol.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from conversations import frames, selectors, services
from conversations.errors import ChatError
from conversations.generation import conversation_group, hub, user_group
from conversations.sweeper import ensure_sweeper

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
T = TypeVar("T")
# The account was deactivated while the socket was open: the page stops reconnecting.
CLOSE_ACCESS_REVOKED = 4403


def _parse_uuid(value: object) -> UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return UUID(value)
    except ValueError:
        return None


# Each call is one short transaction of its own, so none needs the single "thread-sensitive"
# thread, which would queue every socket's sends behind each other (see PERF-NOTES).
def _off_loop(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    return database_sync_to_async(func, thread_sensitive=False)


@_off_loop
def _send_message(
    user: Any,
    conversation_id: UUID | None,
    content: object,
    client_id: UUID | None,
    parent_id: object = None,
    team: object = None,
) -> services.SendOutcome:
    return services.message_send(
        user=user,
        conversation_id=conversation_id,
        content=content,
        client_id=client_id,
        parent_id=parent_id,
        team=team,
    )


@_off_loop
def _send_frames(outcome: services.SendOutcome, new_chat: bool) -> tuple[dict | None, list[dict]]:
    if outcome.branched:
        # The page showed another branch than the stored one: redraw it whole.
        rendered = [
            {**frames.thread_frame(outcome.conversation), "fresh": outcome.plan is not None}
        ]
    else:
        if outcome.plan is not None:
            # A new pair: the reply is the shown leaf, and the tree around both is read in one
            # go rather than once per message (this is on the way to the first token).
            selectors.annotate_tree([outcome.user_message, outcome.reply], leaf_id=outcome.reply.id)
        rendered = [frames.message_frame(outcome.user_message), frames.message_frame(outcome.reply)]
    # Also for a resend of a new chat's first message: that page does not know the id yet.
    created = frames.conversation_frame(outcome.conversation) if new_chat else None
    return created, rendered


@_off_loop
def _change_tree(action: str, user: Any, conversation_id: UUID, frame: dict):
    """Run one tree service (edit, regenerate, continue, switch); the plan and the redrawn
    branch."""
    common = {
        "user": user,
        "conversation_id": conversation_id,
        "message_id": frame.get("message"),
        # The composer's "Charged to" choice, as for a send.
        "team": frame.get("team"),
    }
    client_id = _parse_uuid(frame.get("client_id"))
    plan = None
    if action == "edit":
        outcome = services.message_edit(**common, content=frame.get("content"), client_id=client_id)
        conversation, plan = outcome.conversation, outcome.plan
    elif action == "regenerate":
        reply = services.message_regenerate(**common, client_id=client_id)
        conversation, plan = reply.conversation, reply.plan
    elif action == "continue":
        reply = services.message_continue(**common, client_id=client_id)
        conversation, plan = reply.conversation, reply.plan
    else:
        del common["team"]  # switching starts no call: nothing is charged
        conversation = services.conversation_switch_branch(**common)
    return plan, frames.thread_frame(conversation)


@dataclass(frozen=True)
class _Opened:
    # The reply in progress, as stored (None when nothing streams).
    streaming: dict | None
    # The end of a reply the page holds part of and that has finished since (None otherwise).
    finished: dict | None


@_off_loop
def _open_conversation(user: Any, conversation_id: UUID, held: object) -> _Opened:
    """Authorize, and read what a page opening the conversation may be missing."""
    conversation = selectors.conversation_get_for_user(user=user, conversation_id=conversation_id)
    reply = selectors.streaming_reply(conversation=conversation)
    streaming = None
    if reply is not None:
        streaming = {
            "type": "reply.snapshot",
            "conversation": str(conversation.id),
            "message": reply.id,
            "seq": None,
            "content": reply.content,
            "reasoning": reply.reasoning,
        }
    finished = None
    if isinstance(held, int) and (reply is None or reply.id != held):
        ended = selectors.finished_reply(conversation=conversation, message_id=held)
        if ended is not None:
            finished = frames.reply_done_frame(ended)
    return _Opened(streaming, finished)


@_off_loop
def _authorize(user: Any, conversation_id: UUID) -> None:
    selectors.conversation_get_for_user(user=user, conversation_id=conversation_id)


class ChatConsumer(AsyncWebsocketConsumer):
    conversation_id: UUID | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Refused during the handshake: the browser sees the connection fail (HTTP 403).
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await hub.ensure_started()
        ensure_sweeper()
        self.user_id = user.pk
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        await self.accept()

    async def user_revoked(self, event: dict) -> None:
        """The user was deactivated: stop their replies here and close this socket."""
        hub.stop_user(event["user"])
        await self.close(code=CLOSE_ACCESS_REVOKED)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "user_id", None) is not None:
            await self.channel_layer.group_discard(user_group(self.user_id), self.channel_name)
        # The reply goes on without this socket; only stop sending to it.
        if self.conversation_id is not None:
            hub.unwatch(self.conversation_id, self)
            if hub.cross_process:
                await self.channel_layer.group_discard(
                    conversation_group(self.conversation_id), self.channel_name
                )

    async def chat_frame(self, event: dict) -> None:
        """A frame from another process (the channel layer's group for the conversation)."""
        if event.get("origin") and event["origin"] == hub.channel_name:
            return  # this process's own frame: its sockets already had it directly
        frame = event["frame"]
        if frame.get("conversation") == str(self.conversation_id):
            await self.send_frame(frame)

    async def send_text_frame(self, text: str) -> None:
        await self.send(text_data=text)

    async def send_frame(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))

    async def send_error(self, message: str, code: str, **extra: Any) -> None:
        await self.send_frame({"type": "error", "code": code, "message": message, **extra})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(raw.encode("utf-8")) > settings.CHAT_MAX_FRAME_BYTES:
            await self.send_error(
                f"That was too large to send (over {settings.CHAT_MAX_FRAME_BYTES // 1024} KB). "
                "Nothing was sent.",
                "frame_too_large",
            )
            return
        try:
            frame = json.loads(raw)
        except ValueError:
            await self.send_error("The app sent a malformed frame.", "bad_frame")
            return
        if not isinstance(frame, dict):
            await self.send_error("The app sent a malformed frame.", "bad_frame")
            return
        handler = {
            "subscribe": self.on_subscribe,
            "send": self.on_send,
            "stop": self.on_stop,
            "edit": self.on_tree_change,
            "regenerate": self.on_tree_change,
            "continue": self.on_tree_change,
            "switch": self.on_tree_change,
        }.get(frame.get("type"))
        if handler is None:
            await self.send_error("Unknown frame type.", "bad_frame")
            return
        try:
            await handler(frame)
        except ChatError as exc:
            await self.send_error(
                exc.message,
                exc.code,
                client_id=frame.get("client_id"),
                conversation=frame.get("conversation"),
            )

    async def _show(self, conversation_id: UUID) -> None:
        previous = self.conversation_id
        if previous == conversation_id:
            return
        if previous is not None:
            hub.unwatch(previous, self)
        self.conversation_id = conversation_id
        hub.watch(conversation_id, self)
        if hub.cross_process:
            if previous is not None:
                await self.channel_layer.group_discard(
                    conversation_group(previous), self.channel_name
                )
            await self.channel_layer.group_add(
                conversation_group(conversation_id), self.channel_name
            )

    async def on_subscribe(self, frame: dict) -> None:
        conversation_id = _parse_uuid(frame.get("conversation"))
        if conversation_id is None:
            raise ChatError("This conversation does not exist.", code="not_found")
        held, seq = frame.get("message"), frame.get("seq")
        opened = await _open_conversation(self.scope["user"], conversation_id, held)
        await self._show(conversation_id)
        if opened.finished is not None:
            # The page holds part of a reply that ended while it was away: the stored end.
            await self.send_frame(opened.finished)
        generation = hub.get(conversation_id)
        if generation is not None:
            await self.send_frame(generation.resume_frame(message=held, seq=seq, for_remote=False))
            if generation.status_frame is not None:
                await self.send_frame(generation.status_frame)
        elif opened.streaming is not None:
            # Another process may be writing it: ask that one for exactly what is missing. A
            # page that holds part of this reply already keeps it rather than going back to
            # the last flush.
            if not (held == opened.streaming["message"] and isinstance(seq, int)):
                await self.send_frame(opened.streaming)
            await hub.request(
                conversation_id,
                {
                    "type": "chat.resume",
                    "reply_channel": self.channel_name,
                    "message": held,
                    "seq": seq,
                },
            )
        await self.send_frame(
            {
                "type": "subscribed",
                "conversation": str(conversation_id),
                "streaming": generation is not None or opened.streaming is not None,
            }
        )

    async def on_send(self, frame: dict) -> None:
        conversation_id = None
        if frame.get("conversation") is not None:
            conversation_id = _parse_uuid(frame.get("conversation"))
            if conversation_id is None:
                raise ChatError("This conversation does not exist.", code="not_found")
        outcome = await _send_message(
            self.scope["user"],
            conversation_id,
            frame.get("content"),
            _parse_uuid(frame.get("client_id")),
            frame.get("parent"),
            frame.get("team"),
        )
        # The upstream request starts now, while the frames are rendered and sent; its tokens
        # wait until the page has the reply to add them to (announce below).
        plan = outcome.plan
        generation = await hub.start(plan, announced=False) if plan is not None else None
        conversation_uuid = outcome.conversation.id
        try:
            created, rendered = await _send_frames(outcome, conversation_id is None)
            await self._show(conversation_uuid)
            if created is not None:
                await self.send_frame({**created, "client_id": frame.get("client_id")})
            for message_frame in rendered:
                await hub.broadcast(
                    conversation_uuid, {**message_frame, "client_id": frame.get("client_id")}
                )
        finally:
            if generation is not None:
                generation.announce()
        if generation is None and (running := hub.get(conversation_uuid)) is not None:
            # A resend of a message already answered: show the reply where it stands.
            await self.send_frame(running.snapshot_frame())

    async def on_tree_change(self, frame: dict) -> None:
        conversation_id = _parse_uuid(frame.get("conversation"))
        if conversation_id is None:
            raise ChatError("This conversation does not exist.", code="not_found")
        plan, thread = await _change_tree(frame["type"], self.scope["user"], conversation_id, frame)
        await self._show(conversation_id)
        # Every page showing the conversation follows: the branch shown is the conversation's.
        await hub.broadcast(
            conversation_id,
            {**thread, "client_id": frame.get("client_id"), "fresh": plan is not None},
        )
        if plan is not None:
            await hub.start(plan)

    async def on_stop(self, frame: dict) -> None:
        conversation_id = _parse_uuid(frame.get("conversation"))
        if conversation_id is None:
            raise ChatError("This conversation does not exist.", code="not_found")
        await _authorize(self.scope["user"], conversation_id)
        if not hub.stop(conversation_id):
            await hub.request(conversation_id, {"type": "chat.stop"})
