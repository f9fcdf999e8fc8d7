"""Relay benchmark: the fake upstream read directly with httpx, against the same stream relayed
through the app's websocket (daphne, PostgreSQL), measured in the same run.

    .venv/bin/python bench/relay.py            # the whole benchmark, a few minutes
    .venv/bin/python bench/relay.py --quick    # fewer repeats, for a first look

Everything runs on this machine: PostgreSQL (a database made for the run and dropped after it),
fake upstreams in their own processes (``python -m tests.fake_upstream``), the app under daphne
as scripts/run.sh starts it (``python -m chatsite.serve``), and this process as the load client
for both sides. Figures are ratios against the direct baseline; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import websockets  # noqa: E402
from psycopg import sql  # noqa: E402

PG_SERVER = os.environ.get("BENCH_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
SECRET_KEY = "bench-" + "s" * 60
API_KEY = "sk-bench"
USERS = 500
IDLE_SOCKETS = 500
PROMPT = "Write something long."

# Upstream scripts (one fake upstream process each): tokens per answer, seconds between them.
UPSTREAMS = {
    "short": (5, 0.005),  # time to first token, sampled many times
    "paced": (200, 0.005),  # the streams: 200 tokens, 5 ms apart
    "fast": (2000, 0.0),  # the upstream as fast as it can; long enough to measure a rate
    "long": (1000, 0.005),  # 5 s streams, for database writes against duration
}

# Variables the app reads: the server under test sees only the ones set here.
APP_PREFIXES = (
    "ALLOWED_HOSTS",
    "BEHIND_PROXY",
    "CHANNEL_",
    "CHAT_",
    "CSRF_",
    "DATABASE_",
    "DEBUG",
    "HTTPS",
    "LOG_LEVEL",
    "OPENAI_",
    "REDIS_",
    "SECRET_KEY",
    "VAR_DIR",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def median(values: list[float]) -> float:
    return percentile(values, 0.5)


# --- processes ------------------------------------------------------------------------------


def start_upstream(tokens: int, delay: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fake_upstream",
            "--port",
            "0",
            "--tokens",
            str(tokens),
            "--delay",
            str(delay),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http"):
        process.kill()
        raise RuntimeError(f"the fake upstream did not start: {base_url!r}")
    return process, base_url


def app_environment(database_url: str, var_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(APP_PREFIXES)}
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET_KEY,
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        VAR_DIR=str(var_dir),
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        # A reply is what is measured: no title call after each first exchange.
        CHAT_GENERATED_TITLES="0",
        **extra,
    )
    return env


class Daphne:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> Daphne:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chatsite.serve", "-b", "127.0.0.1", "-p", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited; see {self.log_path}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/accounts/login/", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne did not answer; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def cpu_seconds(self) -> float:
        """CPU time daphne has used (user + system), from /proc."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_split(self) -> tuple[int, int]:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])

    def memory_kb(self) -> dict[str, int]:
        assert self.process is not None
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
        return fields

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"


# --- the database ---------------------------------------------------------------------------


DROP = "DROP DATABASE IF EXISTS {} WITH (FORCE)"


def create_database(name: str) -> str:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL(DROP).format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{PG_SERVER}/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL(DROP).format(sql.Identifier(name)))


def rows_written(database_url: str) -> dict[str, int]:
    """Rows inserted, updated and deleted, per table, as PostgreSQL counts them.

    Backends report their counts when they exit (or when idle, at most once a second), so read
    this with the server stopped."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"
        ).fetchall()
    return {name: int(count) for name, count in rows}


@dataclass
class Account:
    session: str
    conversations: dict[str, list[str]]  # upstream kind -> unused conversation ids


def prepare_data(database_url: str, var_dir: Path, upstreams: dict[str, str]) -> list[Account]:
    """Migrate, then make the providers, users, sessions and empty conversations (ORM, sync)."""
    os.environ.update(app_environment(database_url, var_dir, {"DATABASE_POOL": "0"}))
    import django

    django.setup()
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.db import connections

    from conversations.models import Conversation
    from providers.models import ChatModel, Provider

    call_command("migrate", verbosity=0)
    models = {}
    for kind, base_url in upstreams.items():
        provider = Provider.objects.create(name=f"bench {kind}", base_url=base_url, api_key=API_KEY)
        models[kind] = ChatModel.objects.create(
            provider=provider,
            name="fake-model",
            context_window=32768,
            max_output_tokens=4096,
            is_default=kind == "paced",
        )
    user_model = get_user_model()
    users = user_model.objects.bulk_create(
        user_model(username=f"bench{i}", password=make_password(None)) for i in range(USERS)
    )
    per_user = 4
    conversations = Conversation.objects.bulk_create(
        Conversation(owner=user, model=model, title="bench")
        for user in users
        for model in models.values()
        for _ in range(per_user)
    )
    accounts = []
    by_owner: dict[int, dict[str, list[str]]] = {}
    kind_of = {model.pk: kind for kind, model in models.items()}
    for conversation in conversations:
        owned = by_owner.setdefault(conversation.owner_id, {kind: [] for kind in models})
        owned[kind_of[conversation.model_id]].append(str(conversation.id))
    for user in users:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        accounts.append(Account(session.session_key or "", by_owner[user.pk]))
    connections.close_all()
    return accounts


class Accounts:
    """Hands out users round-robin, so no user nears the per-user limits."""

    def __init__(self, accounts: list[Account]) -> None:
        self.accounts = accounts
        self.cursor = 0

    def take(self, count: int) -> list[Account]:
        taken = []
        for _ in range(count):
            taken.append(self.accounts[self.cursor % len(self.accounts)])
            self.cursor += 1
        return taken


# --- one stream, read directly or through the relay -----------------------------------------


@dataclass
class StreamResult:
    started: float
    token_times: list[float] = field(default_factory=list)
    text: str = ""

    @property
    def ttft(self) -> float:
        return self.token_times[0] - self.started

    @property
    def ended(self) -> float:
        return self.token_times[-1]

    def gaps(self) -> list[float]:
        times = self.token_times
        return [b - a for a, b in itertools.pairwise(times)]


async def direct_stream(client: httpx.AsyncClient, base_url: str) -> StreamResult:
    body = {
        "model": "fake-model",
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    clock = time.perf_counter
    result = StreamResult(started=clock())
    parts: list[str] = []
    buffer = b""
    async with client.stream(
        "POST",
        f"{base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            now = clock()
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: ") or event == b"data: [DONE]":
                    continue
                choices = json.loads(event[6:]).get("choices") or ()
                for choice in choices:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        parts.append(content)
                        result.token_times.append(now)
    result.text = "".join(parts)
    return result


class RelayClient:
    """One signed-in websocket, as a browser tab."""

    def __init__(self, socket: websockets.ClientConnection, account: Account) -> None:
        self.socket = socket
        self.account = account

    @classmethod
    async def open(cls, url: str, account: Account) -> RelayClient:
        socket = await websockets.connect(
            url,
            origin=url.replace("ws://", "http://").split("/ws/")[0],
            additional_headers={"Cookie": f"sessionid={account.session}"},
            max_size=None,
            open_timeout=60,
            ping_interval=None,
        )
        return cls(socket, account)

    async def stream(self, kind: str) -> StreamResult:
        conversation = self.account.conversations[kind].pop()
        clock = time.perf_counter
        result = StreamResult(started=clock())
        await self.socket.send(
            json.dumps(
                {
                    "type": "send",
                    "conversation": conversation,
                    "content": PROMPT,
                    "client_id": str(uuid.uuid4()),
                }
            )
        )
        parts: list[str] = []
        seq = 0
        while True:
            frame = json.loads(await self.socket.recv())
            now = clock()
            kind_ = frame["type"]
            if kind_ == "reply.delta":
                if frame["from"] != seq:
                    raise RuntimeError(f"a frame was missed: {frame['from']} after {seq}")
                seq = frame["seq"]
                content = frame["content"]
                parts.append(content)
                result.token_times.extend([now] * content.count(" "))
            elif kind_ == "reply.snapshot":
                raise RuntimeError("unexpected snapshot for a socket that saw the whole reply")
            elif kind_ == "reply.done":
                if frame["status"] != "complete":
                    raise RuntimeError(f"the reply ended {frame['status']}: {frame}")
                break
            elif kind_ == "error":
                raise RuntimeError(f"the app refused: {frame}")
        result.text = "".join(parts)
        return result

    async def close(self) -> None:
        await self.socket.close()


def expected_text(kind: str) -> str:
    tokens, _ = UPSTREAMS[kind]
    return "".join(f"tok{i} " for i in range(tokens))


# --- scenarios ------------------------------------------------------------------------------


@dataclass
class Run:
    results: list[StreamResult]

    @property
    def tokens(self) -> int:
        return sum(len(r.token_times) for r in self.results)

    @property
    def tokens_per_second(self) -> float:
        start = min(r.started for r in self.results)
        end = max(r.ended for r in self.results)
        return self.tokens / (end - start)

    def gaps(self) -> list[float]:
        return [gap for r in self.results for gap in r.gaps()]


async def timed_run(streams: list[Callable[[], Awaitable[StreamResult]]], kind: str) -> Run:
    results = await asyncio.gather(*(stream() for stream in streams))
    expected = expected_text(kind)
    for result in results:
        if result.text != expected:
            raise RuntimeError(
                f"wrong text: {len(result.text)} characters instead of {len(expected)}"
            )
    return Run(list(results))


@dataclass
class Comparison:
    direct: list[Run] = field(default_factory=list)
    relay: list[Run] = field(default_factory=list)
    server_cpu: float = 0.0  # daphne's CPU seconds during the relay runs

    def cpu_per_1000_tokens(self) -> float:
        return self.server_cpu / sum(run.tokens for run in self.relay) * 1000

    def rate(self, side: str) -> float:
        return median([run.tokens_per_second for run in getattr(self, side)])

    def gap_p99(self, side: str) -> float:
        return percentile([g for run in getattr(self, side) for g in run.gaps()], 0.99)

    def frames(self) -> float:
        """Websocket frames per reply (tokens share the arrival time of their frame)."""
        counts = []
        for run in self.relay:
            for result in run.results:
                counts.append(len(set(result.token_times)))
        return sum(counts) / len(counts)


async def compare(
    name: str,
    concurrency: int,
    kind: str,
    repeats: int,
    base_url: str,
    server: Daphne,
    accounts: Accounts,
    http: httpx.AsyncClient,
) -> Comparison:
    comparison = Comparison()
    ws_url = server.ws_url
    for repeat in range(repeats):
        clients = await open_clients(ws_url, accounts.take(concurrency))
        try:
            order = ("direct", "relay") if repeat % 2 == 0 else ("relay", "direct")
            for side in order:
                await asyncio.sleep(0.3)  # let the previous run's writes settle
                if side == "direct":
                    streams = [lambda: direct_stream(http, base_url)] * concurrency
                    comparison.direct.append(await timed_run(streams, kind))
                else:
                    streams = [lambda c=c: c.stream(kind) for c in clients]
                    cpu = server.cpu_seconds()
                    comparison.relay.append(await timed_run(streams, kind))
                    used = server.cpu_seconds() - cpu
                    comparison.server_cpu += used
                    run = comparison.relay[-1]
                    log(
                        f"    relay run: daphne used {used * 1000:.0f} ms of CPU;"
                        f" first tokens after {ms(median([r.ttft for r in run.results]))}"
                        f" (last {ms(max(r.ttft for r in run.results))})"
                    )
        finally:
            await asyncio.gather(*(c.close() for c in clients))
    log(
        f"  {name}: direct {comparison.rate('direct'):,.0f} tok/s, "
        f"relay {comparison.rate('relay'):,.0f} tok/s"
    )
    return comparison


async def time_to_first_token(
    samples: int, base_url: str, ws_url: str, accounts: Accounts, http: httpx.AsyncClient
) -> tuple[list[float], list[float]]:
    clients = [await RelayClient.open(ws_url, a) for a in accounts.take(25)]
    direct: list[float] = []
    relay: list[float] = []
    try:
        for _ in range(3):  # warm up both paths (connections, imports, caches)
            await direct_stream(http, base_url)
            await clients[0].stream("short")
        for index in range(samples):
            client = clients[index % len(clients)]
            if not client.account.conversations["short"]:
                continue
            if index % 2:
                direct.append((await direct_stream(http, base_url)).ttft)
                relay.append((await client.stream("short")).ttft)
            else:
                relay.append((await client.stream("short")).ttft)
                direct.append((await direct_stream(http, base_url)).ttft)
    finally:
        for client in clients:
            await client.close()
    return direct, relay


async def writes_phase(ws_url: str, accounts: Accounts, kind: str, count: int) -> float:
    """Run count replies at once; their duration (median, seconds)."""
    clients = await open_clients(ws_url, accounts.take(count))
    try:
        run = await timed_run([lambda c=c: c.stream(kind) for c in clients], kind)
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return median([r.ended - r.started for r in run.results])


async def open_clients(ws_url: str, accounts: list[Account]) -> list[RelayClient]:
    clients: list[RelayClient] = []
    for start in range(0, len(accounts), 50):  # in batches, as pages would open
        batch = accounts[start : start + 50]
        clients += await asyncio.gather(*(RelayClient.open(ws_url, a) for a in batch))
    return clients


async def idle_sockets(ws_url: str, accounts: list[Account], count: int) -> list[RelayClient]:
    clients = await open_clients(ws_url, [accounts[i % len(accounts)] for i in range(count)])
    for client in clients:
        conversation = client.account.conversations["paced"][0]
        await client.socket.send(json.dumps({"type": "subscribe", "conversation": conversation}))
    for client in clients:
        while json.loads(await client.socket.recv())["type"] != "subscribed":
            pass
    return clients


# --- the report -----------------------------------------------------------------------------


@dataclass
class Line:
    metric: str
    direct: str
    relay: str
    ratio: str
    target: str
    met: bool | None


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(lines: list[Line]) -> str:
    rows = [("metric", "direct", "relay", "relay vs direct", "target", "")]
    for line in lines:
        mark = "" if line.met is None else ("met" if line.met else "MISSED")
        rows.append((line.metric, line.direct, line.relay, line.ratio, line.target, mark))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for index, row in enumerate(rows):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------


@dataclass
class Settings:
    ttft_samples: int
    repeats: dict[int, int]
    fast_repeats: int


FULL = Settings(ttft_samples=200, repeats={1: 3, 20: 3, 50: 3, 200: 2}, fast_repeats=3)
QUICK = Settings(ttft_samples=60, repeats={1: 1, 20: 1, 50: 1, 200: 1}, fast_repeats=1)


PHASES = ("ttft", "streams", "fast", "writes", "memory")


class Bench:
    """The measurements, each a phase that adds lines to the report."""

    def __init__(
        self,
        plan: Settings,
        upstreams: dict[str, str],
        daphne_env: dict[str, str],
        accounts: list[Account],
        database_url: str,
        var_dir: Path,
        profile: Path | None,
        log_path: Path | None,
    ) -> None:
        self.plan = plan
        self.upstreams = upstreams
        self.daphne_env = daphne_env
        self.accounts = accounts
        self.pool = Accounts(accounts)
        self.database_url = database_url
        self.log_path = log_path or var_dir / "daphne.log"
        self.profile = profile
        self.lines: list[Line] = []
        self.http: httpx.AsyncClient

    async def run(self, phases: list[str]) -> list[Line]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(limits=limits, timeout=60, trust_env=False) as self.http:
            served = [p for p in phases if p in ("ttft", "streams", "fast")]
            if served:
                server = Daphne(self.daphne_env, self.log_path).start()
                profiler = self._profile(server)
                try:
                    for phase in served:
                        await getattr(self, phase)(server)
                finally:
                    if profiler is not None:
                        profiler.send_signal(signal.SIGINT)
                        profiler.wait(60)
                    server.stop()
            if "writes" in phases:
                await self.writes()
            if "memory" in phases:
                await self.memory()
        return self.lines

    def _profile(self, server: Daphne) -> subprocess.Popen[bytes] | None:
        if self.profile is None or server.process is None:
            return None
        log(f"profiling daphne with py-spy into {self.profile}")
        return subprocess.Popen(
            [
                *("py-spy", "record", "--pid", str(server.process.pid), "--rate", "200", "--gil"),
                *("--output", str(self.profile), "--format", self._profile_format()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _profile_format(self) -> str:
        assert self.profile is not None
        return {".svg": "flamegraph", ".txt": "raw"}.get(self.profile.suffix, "speedscope")

    async def ttft(self, server: Daphne) -> None:
        log("time to first token, 1 stream …")
        direct, relay = await time_to_first_token(
            self.plan.ttft_samples, self.upstreams["short"], server.ws_url, self.pool, self.http
        )
        for name, fraction, target in (("p50", 0.5, 0.005), ("p99", 0.99, None)):
            added = percentile(relay, fraction) - percentile(direct, fraction)
            self.lines.append(
                Line(
                    f"time to first token {name}, 1 stream",
                    ms(percentile(direct, fraction)),
                    ms(percentile(relay, fraction)),
                    f"+{ms(added)}",
                    "added < 5 ms" if target else "",
                    added < target if target else None,
                )
            )

    async def streams(self, server: Daphne) -> None:
        for concurrency, repeats in self.plan.repeats.items():
            log(f"{concurrency} concurrent streams, 200 tokens 5 ms apart …")
            result = await compare(
                f"{concurrency} streams",
                concurrency,
                "paced",
                repeats,
                self.upstreams["paced"],
                server,
                self.pool,
                self.http,
            )
            rate = result.rate("relay") / result.rate("direct")
            rate_target = {20: 0.95, 200: 0.9}.get(concurrency)
            self.lines.append(
                Line(
                    f"tokens/s, {concurrency} streams",
                    f"{result.rate('direct'):,.0f}",
                    f"{result.rate('relay'):,.0f}",
                    f"{rate:.2f}x",
                    f">= {rate_target}x" if rate_target else "",
                    rate >= rate_target if rate_target else None,
                )
            )
            direct_gap, relay_gap = result.gap_p99("direct"), result.gap_p99("relay")
            gap_limit = 2 * direct_gap + 0.010
            gap_target = concurrency in (20, 200)
            self.lines.append(
                Line(
                    f"p99 gap between tokens, {concurrency} streams",
                    ms(direct_gap),
                    ms(relay_gap),
                    f"{relay_gap / direct_gap:.2f}x" if direct_gap else "",
                    f"<= 2 x direct + 10 ms = {ms(gap_limit)}" if gap_target else "",
                    relay_gap <= gap_limit if gap_target else None,
                )
            )
            self.lines.append(
                Line(
                    f"websocket frames per reply, {concurrency} streams",
                    "200 events",
                    f"{result.frames():.0f}",
                    "",
                    "",
                    None,
                )
            )
            self.lines.append(
                Line(
                    f"daphne CPU per 1000 tokens, {concurrency} streams",
                    "",
                    ms(result.cpu_per_1000_tokens()),
                    "",
                    "",
                    None,
                )
            )

    async def fast(self, server: Daphne) -> None:
        tokens, _ = UPSTREAMS["fast"]
        log(f"20 concurrent streams, upstream as fast as it can ({tokens} tokens) …")
        result = await compare(
            "unpaced",
            20,
            "fast",
            self.plan.fast_repeats,
            self.upstreams["fast"],
            server,
            self.pool,
            self.http,
        )
        rate = result.rate("relay") / result.rate("direct")
        self.lines.append(
            Line(
                f"tokens/s, 20 streams, upstream unpaced ({tokens} tokens)",
                f"{result.rate('direct'):,.0f}",
                f"{result.rate('relay'):,.0f}",
                f"{rate:.2f}x",
                ">= 0.25x",
                rate >= 0.25,
            )
        )
        self.lines.append(
            Line(
                "websocket frames per reply, unpaced",
                f"{tokens} events",
                f"{result.frames():.0f}",
                "",
                "",
                None,
            )
        )
        self.lines.append(
            Line(
                "daphne CPU per 1000 tokens, unpaced",
                "",
                ms(result.cpu_per_1000_tokens()),
                "",
                "",
                None,
            )
        )

    async def writes(self) -> None:
        log("database writes per reply …")
        measured: list[tuple[int, float, float]] = []
        for kind, count in (("paced", 10), ("long", 10), ("fast", 10)):
            # A fresh server each time: PostgreSQL counts a backend's writes when it exits.
            before = rows_written(self.database_url)
            server = Daphne(self.daphne_env, self.log_path).start()
            try:
                duration = await writes_phase(server.ws_url, self.pool, kind, count)
            finally:
                server.stop()
            after = rows_written(self.database_url)
            per_table = {
                name: (after[name] - before.get(name, 0)) / count
                for name in after
                if after[name] != before.get(name, 0)
            }
            writes = sum(per_table.values())
            log(f"  {kind}: " + ", ".join(f"{name} {n:g}" for name, n in sorted(per_table.items())))
            tokens, _ = UPSTREAMS[kind]
            measured.append((tokens, duration, writes))
        # Bounded by the duration plus a constant, not by the token count: what is left once the
        # duration (one flush a second) is taken away is the same for 200, 1000 or 2000 tokens.
        constants = [writes - duration for _, duration, writes in measured]
        bounded = max(constants) - min(constants) <= 2
        for tokens, duration, writes in measured:
            self.lines.append(
                Line(
                    f"database rows written per reply, {tokens} tokens in {duration:.1f} s",
                    "",
                    f"{writes:.1f}",
                    f"{writes - duration:.1f} + seconds",
                    "seconds + the same constant",
                    bounded,
                )
            )

    async def memory(self) -> None:
        log(f"{IDLE_SOCKETS} idle sockets …")
        server = Daphne(self.daphne_env, self.log_path).start()
        try:
            before = server.memory_kb()["VmRSS"] / 1024
            clients = await idle_sockets(server.ws_url, self.accounts, IDLE_SOCKETS)
            await asyncio.sleep(2)
            memory = server.memory_kb()
            await asyncio.gather(*(c.close() for c in clients))
        finally:
            server.stop()
        peak_mb = memory["VmHWM"] / 1024
        self.lines.append(
            Line(
                f"daphne peak resident memory, {IDLE_SOCKETS} idle sockets",
                f"{before:.0f} MB before",
                f"{peak_mb:.0f} MB",
                "",
                "< 150 MB",
                peak_mb < 150,
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="also give the app REDIS_URL (channels-redis), as a multi-process deployment runs",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=PHASES,
        default=list(PHASES),
        help="run only these measurements",
    )
    parser.add_argument(
        "--concurrency",
        nargs="+",
        type=int,
        help="stream counts for the paced measurement (default 1 20 50 200)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="FILE",
        type=Path,
        help="record daphne with py-spy (installed separately) into FILE: .svg for a flame "
        "graph, .txt for collapsed stacks, else speedscope JSON",
    )
    parser.add_argument("--log", metavar="FILE", type=Path, help="keep daphne's output here")
    parser.add_argument(
        "--set",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="an environment variable for the app, e.g. CHAT_FRAME_INTERVAL_MS=12 (repeatable)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.concurrency:
        repeats = max(plan.repeats.values())
        plan = Settings(
            plan.ttft_samples, dict.fromkeys(args.concurrency, repeats), plan.fast_repeats
        )

    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh")], check=True)
    name = f"bench_relay_{os.getpid()}"
    processes: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        var_dir = Path(tmp)
        database_url = create_database(name)
        try:
            upstreams = {}
            for kind, (tokens, delay) in UPSTREAMS.items():
                process, base_url = start_upstream(tokens, delay)
                processes.append(process)
                upstreams[kind] = base_url
            log(f"preparing {name}: migrate, {USERS} users …")
            accounts = prepare_data(database_url, var_dir, upstreams)
            extra = {"REDIS_URL": args.redis} if args.redis else {}
            extra.update(item.split("=", 1) for item in args.set)
            daphne_env = app_environment(database_url, var_dir, extra)
            bench = Bench(
                plan, upstreams, daphne_env, accounts, database_url, var_dir, args.py_spy, args.log
            )
            lines = asyncio.run(bench.run(args.only))
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
            drop_database(name)
    layer = "channels-redis" if args.redis else "in-memory channel layer"
    print(f"\nRelay benchmark ({'quick' if args.quick else 'full'} run, {layer}, PostgreSQL)")
    print(report(lines))


if __name__ == "__main__":
    main()
