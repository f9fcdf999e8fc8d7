"""The README's promise, with the real local model: on a fresh checkout and a machine with no
provider configured, ``scripts/run.sh`` alone gives a working chat.

The checkout is copied to a temporary folder without its virtual environment, and run.sh is
started there as the README says (HOST, PORT, a fresh VAR_DIR with the default SQLite database,
the first admin from DJANGO_SUPERUSER_*): it makes its own .venv, installs the app, installs the
``local`` extra (compiling llama.cpp the first time on a machine; pip's wheel cache makes later
runs quick) and runs daphne with the model server. Chromium then signs in and chats; what was
streamed and stored (with the usage the server reported) is checked in the database, and so are
the loopback-only port, a restart after the model server is killed, and a clean stop.

Slow by nature (a real model on the CPU); skipped, with the reason, only where llama-cpp-python
cannot be built or loaded. Nothing here measures speed: the waits are generous and for events.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, expect

from providers.localmodel import DESCRIPTION, DISPLAY_NAME, MODEL_ALIAS
from tests.browser.live_app import _APP_PREFIXES, REPO, Account, _free_port
from tests.browser.ui import normalized, replies, send, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.local_model, pytest.mark.timeout(3600)]

ADMIN = Account("admin", "local model e2e password 7")
# Set through the environment and expected back from the server's own report (/props): the
# limits the app uses are the server's, not assumed.
CONTEXT, REPLY_LIMIT = 4096, 160
# A first run on a machine without pip's cached wheel compiles llama.cpp: several minutes.
READY_TIMEOUT = 2400
REPLY_TIMEOUT_MS = 300_000
SKIP_STAGES = ("install", "import")  # llama-cpp-python cannot be built or loaded here


@dataclass
class FreshRun:
    url: str
    checkout: Path
    var: Path
    log: Path
    process: subprocess.Popen[bytes]
    seconds_to_ready: float

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.var / "local-model" / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def query(self, statement: str, params: tuple = ()) -> list[tuple]:
        with sqlite3.connect(self.var / "db.sqlite3", timeout=30) as conn:
            return conn.execute(statement, params).fetchall()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def copy_checkout(target: Path) -> None:
    """The files a clone has (tracked, or new and not ignored): no .venv, var or staticfiles."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def listening_addresses(port: int) -> set[str]:
    """Addresses with a socket listening on ``port``, read from the kernel's tables."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


def wait_for(run: FreshRun, condition, what: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = run.status()
        if condition(current):
            return current
        if run.process.poll() is not None:
            pytest.fail(f"scripts/run.sh exited ({run.process.returncode}):\n{run.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen; status {current}\n{run.output()[-8000:]}")
        time.sleep(0.5)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(60)
    # Whatever is left of its process group (it is its own session): nothing may outlive it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@pytest.fixture(scope="module")
def fresh_run(
    chromium_executable: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FreshRun]:
    checkout = tmp_path_factory.mktemp("fresh-checkout")
    copy_checkout(checkout)
    var = checkout / "var"
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith((*_APP_PREFIXES, "LOCAL_MODEL", "STATIC_ROOT", "HOST", "PORT"))
    }
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        VAR_DIR=str(var),
        DJANGO_SUPERUSER_USERNAME=ADMIN.username,
        DJANGO_SUPERUSER_PASSWORD=ADMIN.password,
        LOCAL_MODEL_CONTEXT=str(CONTEXT),
        LOCAL_MODEL_MAX_TOKENS=str(REPLY_LIMIT),
        PYTHONUNBUFFERED="1",
    )
    log = checkout.parent / f"{checkout.name}-run.log"
    started = time.monotonic()
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["bash", "scripts/run.sh"],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = FreshRun(f"http://127.0.0.1:{port}", checkout, var, log, process, 0.0)
    try:
        current = wait_for(
            run,
            lambda s: s.get("state") in ("ready", "failed"),
            "The local model becoming ready",
            READY_TIMEOUT,
        )
        if current["state"] == "failed":
            if current.get("stage") in SKIP_STAGES:
                stop(process)
                pytest.skip(
                    "llama-cpp-python cannot be built or loaded on this machine: "
                    f"{current['message']}\n{current.get('detail', '')}"
                )
            pytest.fail(f"The local model failed: {current}\n{run.output()}")
        run.seconds_to_ready = time.monotonic() - started
        yield run
    finally:
        stop(process)


def stored_replies(run: FreshRun) -> list[tuple]:
    return run.query(
        "SELECT id, status, content, prompt_tokens, completion_tokens, usage_estimated,"
        " model_name FROM conversations_message WHERE role = 'assistant' ORDER BY id"
    )


def test_the_run_command_alone_gives_a_chat_with_the_local_model(
    fresh_run: FreshRun, browser: Browser
):
    run = fresh_run
    timings = {
        "run.sh to a ready model (fresh .venv, install, weights, load)": run.seconds_to_ready
    }
    context = browser.new_context(base_url=run.url)
    page = context.new_page()
    frames: list[dict] = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framereceived",
            lambda payload: (
                frames.append(json.loads(payload)) if isinstance(payload, str) else None
            ),
        ),
    )

    # The admin made by run.sh signs in; the page says which model this is, and what it is for.
    sign_in(page, ADMIN)
    expect(page.locator(".model-name")).to_have_text(DISPLAY_NAME)
    expect(page.locator("#model-note")).to_have_text(f"— {DESCRIPTION}")
    expect(page.locator("#local-model-status")).to_contain_text(f"Running {MODEL_ALIAS}")

    # A streamed reply of real tokens, stored with the usage the server reported.
    started = time.monotonic()
    send(page, "What is the capital of France?")
    reply = replies(page).first
    expect(reply).to_have_attribute("data-status", "complete", timeout=REPLY_TIMEOUT_MS)
    timings["first reply"] = time.monotonic() - started
    shown = normalized(reply.locator(".message-body").inner_text())
    assert shown

    [(reply_id, status, content, prompt, completion, estimated, model_name)] = stored_replies(run)
    assert (status, estimated, model_name) == ("complete", 0, DISPLAY_NAME)
    assert content.strip()
    assert prompt > 10 and 1 <= completion <= REPLY_LIMIT
    deltas = [f for f in frames if f.get("type") == "reply.delta" and f["message"] == reply_id]
    assert len([d for d in deltas if d["content"]]) >= 2, "the reply came whole, not streamed"
    assert "".join(d["content"] for d in deltas) == content

    # The model and its limits as the server reported them (through /props), not assumed.
    [(window, reply_limit, base_url, source, enabled)] = run.query(
        "SELECT m.context_window, m.max_output_tokens, p.base_url, p.source, p.enabled"
        " FROM providers_chatmodel m JOIN providers_provider p ON p.id = m.provider_id"
    )
    assert (window, reply_limit, source, enabled) == (CONTEXT, REPLY_LIMIT, "local", 1)

    # Its port listens on loopback only.
    model_port = urlsplit(base_url).port
    assert urlsplit(base_url).hostname == "127.0.0.1"
    assert listening_addresses(model_port) == {"127.0.0.1"}

    # Staff see the same status in the admin.
    page.goto("/admin/")
    expect(page.locator("#local-model-status")).to_contain_text(f"Running {MODEL_ALIAS}")
    page.go_back()

    # A model server that dies is started again, and the conversation goes on.
    first_pid = run.status()["pid"]
    started = time.monotonic()
    os.kill(first_pid, signal.SIGKILL)
    current = wait_for(
        run,
        lambda s: s.get("state") == "ready" and s.get("pid") != first_pid,
        "A restart of the killed model server",
        300,
    )
    timings["restart after SIGKILL"] = time.monotonic() - started
    assert current["restarts"] == 1 and not alive(first_pid)
    expect(page.locator(".message--assistant")).to_have_count(1)
    started = time.monotonic()
    send(page, "And what is the capital of Italy?")
    second = replies(page).nth(1)
    expect(second).to_have_attribute("data-status", "complete", timeout=REPLY_TIMEOUT_MS)
    timings["second reply"] = time.monotonic() - started
    later = stored_replies(run)
    assert [(row[1], row[5]) for row in later] == [("complete", 0), ("complete", 0)]
    # The second request carried the first turn too (history), so its prompt is longer.
    assert later[1][3] > later[0][3]
    context.close()

    # Stopping the run command (SIGTERM, as a service manager does) stops the model server too.
    started = time.monotonic()
    run.process.terminate()
    assert run.process.wait(60) == 0
    timings["stop"] = time.monotonic() - started
    assert not alive(current["pid"])
    assert listening_addresses(model_port) == set()
    assert run.status()["state"] == "stopped"
    assert run.query("SELECT enabled FROM providers_provider WHERE source = 'local'") == [(0,)]

    print("\nlocal model end to end, seconds:")
    for name, seconds in timings.items():
        print(f"  {name}: {seconds:.1f}")
