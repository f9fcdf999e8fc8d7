"""A small supervisor: the app (daphne) and the local model server as two children of one
process, which is what scripts/run.sh runs in the foreground when the local model is used.

- The model server is started with the app. Once it answers with its limits, ``hooks.ready``
  registers it; until then it is probed twice a second.
- When it dies (or does not answer within ``startup_timeout``), ``hooks.down`` is told why and
  it is started again after a pause that doubles with each failure in a row (capped), so a
  server that cannot start does not spin. A server that stayed up a while starts afresh.
- When the app exits, the model server is stopped and the supervisor exits with the app's code.
- SIGINT (Ctrl+C), SIGTERM and SIGHUP stop both children (SIGTERM, then SIGKILL after a grace
  period) and exit 0. Children also get SIGTERM if the supervisor itself is killed outright
  (Linux's parent-death signal), so no model server is left behind.

No Django imports: what to do on ready/down/stop is the caller's (runner.py).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

_PR_SET_PDEATHSIG = 1
try:
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (AttributeError, OSError):  # not Linux
    _prctl = None


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: Path | None = None
    log_path: Path | None = None  # None: the supervisor's own stdout and stderr


class Child:
    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        log: IO[bytes] | None = None
        if self.spec.log_path is not None:
            self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = self.spec.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.spec.argv,
                env=self.spec.env,
                cwd=self.spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if log else None,
                # preexec_fn is unsafe with threads; the supervisor runs none.
                preexec_fn=_die_with_parent(os.getpid()),
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own descriptor
        self.started_at = time.monotonic()

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.terminate()

    def wait(self, timeout: float) -> None:
        """Wait for the process to end; SIGKILL it when ``timeout`` runs out."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float) -> None:
        self.terminate()
        self.wait(timeout)


class Hooks(Protocol):
    def probe(self) -> Any:
        """The server's limits once it answers; raises while it does not (yet)."""

    def ready(self, limits: Any, pid: int) -> None: ...

    def down(self, *, reason: str, restart_in: float, failures: int) -> None: ...

    def stopped(self) -> None: ...


@dataclass
class Policy:
    tick: float = 0.2
    probe_interval: float = 0.5
    startup_timeout: float = 300.0  # loading a model on a slow, busy machine
    first_delay: float = 1.0
    max_delay: float = 60.0
    stable_after: float = 60.0  # up this long: the next failure counts as the first
    stop_timeout: float = 10.0
    signals: tuple[int, ...] = field(
        default_factory=lambda: (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    )


class Supervisor:
    def __init__(
        self,
        *,
        app: ChildSpec,
        model: ChildSpec,
        hooks: Hooks,
        policy: Policy | None = None,
        out: IO[str] | None = None,
    ) -> None:
        self.app = Child(app)
        self.model = Child(model)
        self.hooks = hooks
        self.policy = policy or Policy()
        self.out = out or sys.stdout
        self.stop_requested = False
        self.failures = 0
        self.restarts = 0
        self._ready_at: float | None = None
        self._next_probe = 0.0
        self._restart_at: float | None = None

    def say(self, text: str) -> None:
        print(f"[local model] {text}", file=self.out, flush=True)

    def request_stop(self, signum: int = 0, frame: object = None) -> None:
        self.stop_requested = True

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        previous = {sig: signal.signal(sig, self.request_stop) for sig in self.policy.signals}
        try:
            self.app.start()
            self._start_model()
            while not self.stop_requested:
                code = self.app.poll()
                if code is not None:
                    self.say(f"The app exited with code {code}; stopping the model server.")
                    # A child killed by a signal reports -N; a shell reports that as 128 + N.
                    return code if code >= 0 else 128 - code
                self._tend_model(time.monotonic())
                time.sleep(self.policy.tick)
            return 0
        finally:
            self.model.terminate()
            self.app.terminate()
            self.model.wait(self.policy.stop_timeout)
            self.app.wait(self.policy.stop_timeout)
            try:
                self.hooks.stopped()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def _start_model(self) -> None:
        self._restart_at = None
        self._ready_at = None
        self._next_probe = 0.0
        self.model.start()

    def _tend_model(self, now: float) -> None:
        if self._restart_at is not None:
            if now >= self._restart_at:
                self.restarts += 1
                self._start_model()
            return
        code = self.model.poll()
        if code is not None:
            self._down(now, f"The model server exited with code {code}.")
            return
        if self._ready_at is not None:
            if self.failures and now - self._ready_at >= self.policy.stable_after:
                self.failures = 0
            return
        if now - self.model.started_at > self.policy.startup_timeout:
            self.model.stop(self.policy.stop_timeout)
            self._down(
                now, f"The model server did not answer within {self.policy.startup_timeout:g} s."
            )
            return
        if now >= self._next_probe:
            self._next_probe = now + self.policy.probe_interval
            self._probe(now)

    def _probe(self, now: float) -> None:
        try:
            limits = self.hooks.probe()
        except Exception:
            return  # not answering yet
        assert self.model.pid is not None
        try:
            self.hooks.ready(limits, self.model.pid)
        except Exception as exc:
            # E.g. the database is briefly unavailable: try again in a moment.
            self.say(f"Could not register the model server, retrying: {exc}")
            self._next_probe = now + 5
            return
        self._ready_at = now

    def _down(self, now: float, reason: str) -> None:
        if self._ready_at is not None and now - self._ready_at >= self.policy.stable_after:
            self.failures = 0
        self.failures += 1
        delay = min(self.policy.max_delay, self.policy.first_delay * 2 ** (self.failures - 1))
        self._ready_at = None
        self._restart_at = now + delay
        self.hooks.down(reason=reason, restart_in=delay, failures=self.failures)
