"""Helpers for websocket tests: a signed-in communicator over the real ASGI application
(origin validator, session auth and all)."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chatsite.asgi import application
from conversations.generation import hub

ORIGIN = "http://127.0.0.1:8000"


def _session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def open_socket(
    user: Any | None, *, origin: str = ORIGIN
) -> tuple[WebsocketCommunicator, bool]:
    headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1:8000")]
    if user is not None:
        cookie = await database_sync_to_async(_session_cookie)(user)
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


async def receive_until(
    communicator: WebsocketCommunicator, frame_type: str, *, timeout: float = 5
) -> list[dict]:
    """Every frame up to and including the first of ``frame_type``."""
    frames: list[dict] = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] == frame_type:
            return frames


def streamed_text(frames: list[dict]) -> str:
    text = ""
    for frame in frames:
        if frame["type"] == "reply.snapshot":
            text = frame["content"]
        elif frame["type"] == "reply.delta":
            text += frame["content"]
    return text


async def settle() -> None:
    """Wait for every generation to end (each writes its final state before ending)."""
    await hub.wait_all()


class CommunicatorSocket:
    """A communicator with a websockets connection's send() and recv(), so that the same
    ReplyFollower (tests/livestack.py) follows replies in-process and against real servers."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator

    async def send(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def recv(self) -> str:
        return await self.communicator.receive_from(timeout=10)
