"""Run the app as real daphne processes for tests, and follow replies the way chat.js does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent


def app_environment(var_dir: Path, **extra: str) -> dict[str, str] | None:
    """What a server started by a test needs to share this test's PostgreSQL database and
    sessions (None without PostgreSQL: SQLite's test database lives in this process only)."""
    from django.conf import settings
    from django.db import connection

    database = connection.settings_dict
    if database["ENGINE"] != "django.db.backends.postgresql":
        return None
    host, port = database["HOST"] or "127.0.0.1", database["PORT"] or 5432
    return {
        "DATABASE_URL": f"postgres://{database['USER']}@{host}:{port}/{database['NAME']}",
        "DATABASE_POOL": "0",
        "REDIS_URL": "",
        "SECRET_KEY": settings.SECRET_KEY,  # sessions made in the test are valid there
        "VAR_DIR": str(var_dir),
        "DEBUG": "true",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        **extra,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Daphne:
    """One daphne process serving chatsite.asgi on a free loopback port."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.port = free_port()
        # No title calls (one more upstream request after a first exchange) unless asked for.
        self.env = {**os.environ, "CHAT_GENERATED_TITLES": "0", **env}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"

    def start(self) -> Daphne:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatsite.serve",  # daphne as scripts/run.sh starts it
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{self.output()}")
            try:
                httpx.get(f"{self.http_url}/accounts/login/", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne did not answer:\n{self.output()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def output(self) -> str:
        if self.process is None or self.process.stdout is None or self.process.poll() is None:
            return ""
        return self.process.stdout.read().decode(errors="replace")


async def connect(server: Daphne, session_cookie: str) -> websockets.ClientConnection:
    return await websockets.connect(
        server.ws_url,
        origin=f"http://127.0.0.1:{server.port}",
        additional_headers={"Cookie": f"sessionid={session_cookie}"},
        max_size=None,
    )


class ReplyFollower:
    """Rebuilds a streamed reply from frames with chat.js's rules (snapshot, delta, resume)."""

    def __init__(self, socket: websockets.ClientConnection, conversation: str) -> None:
        self.socket = socket
        self.conversation = conversation
        self.message: int | None = None
        self.seq: int | None = None
        self.content = ""
        self.done: dict | None = None
        self.frames: list[dict] = []
        self.gaps = 0  # deltas that did not follow on, each answered by asking to resume

    async def subscribe(self) -> None:
        await self.socket.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "conversation": self.conversation,
                    "message": self.message,
                    "seq": self.seq,
                }
            )
        )

    async def handle(self, frame: dict) -> None:
        self.frames.append(frame)
        if frame.get("conversation") != self.conversation:
            return
        kind = frame["type"]
        if kind == "message" and frame["role"] == "assistant" and frame["status"] == "streaming":
            self.message, self.seq, self.content = frame["message"], 0, ""
        elif kind == "reply.snapshot":
            self.message, self.seq, self.content = frame["message"], frame["seq"], frame["content"]
        elif kind == "reply.delta":
            if self.message != frame["message"] or self.seq is None or frame["from"] > self.seq:
                self.gaps += 1
                await self.subscribe()  # a gap: ask for what is missing
            elif frame["seq"] > self.seq:
                # Only the part this follower lacks (a delta may overlap what it holds only
                # when it starts exactly where the follower is, so this is the whole frame).
                assert frame["from"] == self.seq, frame
                self.content += frame["content"]
                self.seq = frame["seq"]
        elif kind == "reply.done":
            self.done = frame

    async def until_done(self, timeout: float = 30) -> dict:
        async def loop() -> dict:
            while self.done is None:
                await self.handle(json.loads(await self.socket.recv()))
            return self.done

        import asyncio

        return await asyncio.wait_for(loop(), timeout)

    async def until(self, predicate, timeout: float = 30) -> None:
        import asyncio

        async def loop() -> None:
            while not predicate(self):
                await self.handle(json.loads(await self.socket.recv()))

        await asyncio.wait_for(loop(), timeout)
