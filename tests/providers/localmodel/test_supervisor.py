"""The supervisor with real child processes: a stand-in app (a sleeping process) and a stand-in
model server (fake_model_server.py). What the tests wait for are events (a hook called, a
process gone), never durations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from providers.localmodel.limits import ServerLimits, fetch_limits
from providers.localmodel.supervisor import ChildSpec, Policy, Supervisor
from tests.livestack import free_port
from tests.providers.localmodel.fake_model_server import ROOT, SLEEPER, child_spec

FAST = Policy(tick=0.05, probe_interval=0.1, first_delay=0.1, stop_timeout=10)


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.05)


class Hooks:
    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[tuple] = []
        self.supervisor: Supervisor | None = None
        self.on_ready: Callable[[Hooks, int], None] = lambda hooks, pid: None
        self.on_down: Callable[[Hooks], None] = lambda hooks: None

    def probe(self) -> ServerLimits:
        return fetch_limits(f"http://127.0.0.1:{self.port}/v1", "", timeout=2)

    def ready(self, limits: ServerLimits, pid: int) -> None:
        self.events.append(("ready", pid, limits))
        self.on_ready(self, pid)

    def down(self, *, reason: str, restart_in: float, failures: int) -> None:
        self.events.append(("down", reason, restart_in, failures))
        self.on_down(self)

    def stopped(self) -> None:
        self.events.append(("stopped",))

    def stop(self) -> None:
        assert self.supervisor is not None
        self.supervisor.request_stop()


def supervise(
    hooks: Hooks, *, app: list[str] = SLEEPER, model: ChildSpec | None = None, policy: Policy = FAST
) -> Supervisor:
    supervisor = Supervisor(
        app=ChildSpec(name="app", argv=app),
        model=model or child_spec(hooks.port),
        hooks=hooks,
        policy=policy,
    )
    hooks.supervisor = supervisor
    return supervisor


def test_registers_the_model_server_when_it_answers_and_stops_both_on_request():
    hooks = Hooks(free_port())
    hooks.on_ready = lambda hooks, pid: hooks.stop()
    supervisor = supervise(hooks)

    assert supervisor.run() == 0

    kinds = [event[0] for event in hooks.events]
    assert kinds == ["ready", "stopped"]
    _, pid, limits = hooks.events[0]
    assert limits == ServerLimits(model="fake-local", context_window=2048, max_output_tokens=256)
    assert pid == supervisor.model.pid
    assert supervisor.app.poll() is not None and supervisor.model.poll() is not None


def test_a_model_server_that_dies_is_started_again():
    hooks = Hooks(free_port())

    def on_ready(hooks: Hooks, pid: int) -> None:
        if len([e for e in hooks.events if e[0] == "ready"]) == 1:
            os.kill(pid, signal.SIGKILL)
        else:
            hooks.stop()

    hooks.on_ready = on_ready
    supervisor = supervise(hooks)
    assert supervisor.run() == 0

    kinds = [event[0] for event in hooks.events]
    assert kinds == ["ready", "down", "ready", "stopped"]
    first_pid, second_pid = hooks.events[0][1], hooks.events[2][1]
    assert first_pid != second_pid
    _, reason, restart_in, failures = hooks.events[1]
    assert reason == "The model server exited with code -9."
    assert (restart_in, failures) == (FAST.first_delay, 1)
    assert supervisor.restarts == 1
    assert not alive(second_pid)


def test_a_model_server_that_never_answers_is_restarted_with_growing_pauses():
    hooks = Hooks(free_port())
    hooks.on_down = lambda hooks: hooks.stop() if len(hooks.events) == 2 else None
    never_answers = ChildSpec(name="model server", argv=SLEEPER)
    policy = Policy(tick=0.05, probe_interval=0.1, first_delay=0.1, startup_timeout=0.5)
    supervisor = supervise(hooks, model=never_answers, policy=policy)

    assert supervisor.run() == 0

    downs = [event for event in hooks.events if event[0] == "down"]
    assert [(d[1], d[2], d[3]) for d in downs] == [
        ("The model server did not answer within 0.5 s.", 0.1, 1),
        ("The model server did not answer within 0.5 s.", 0.2, 2),
    ]
    assert hooks.events[-1] == ("stopped",)


def test_when_the_app_exits_the_model_server_stops_and_its_code_is_returned():
    hooks = Hooks(free_port())
    supervisor = supervise(hooks, app=[sys.executable, "-c", "raise SystemExit(3)"])

    assert supervisor.run() == 3

    assert hooks.events[-1] == ("stopped",)
    assert supervisor.model.poll() is not None


def test_sigterm_stops_both_children_and_restores_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    hooks = Hooks(free_port())
    hooks.on_ready = lambda hooks, pid: os.kill(os.getpid(), signal.SIGTERM)
    supervisor = supervise(hooks)

    assert supervisor.run() == 0

    assert [event[0] for event in hooks.events] == ["ready", "stopped"]
    assert not alive(supervisor.app.pid) and not alive(supervisor.model.pid)
    assert signal.getsignal(signal.SIGTERM) == previous


SUPERVISED = """
import json, sys
from pathlib import Path
from providers.localmodel.limits import fetch_limits
from providers.localmodel.supervisor import ChildSpec, Policy, Supervisor
from tests.providers.localmodel.fake_model_server import SLEEPER, child_spec

port, report = int(sys.argv[1]), Path(sys.argv[2])

class Hooks:
    def probe(self):
        return fetch_limits(f"http://127.0.0.1:{port}/v1", "", timeout=2)
    def ready(self, limits, pid):
        report.write_text(json.dumps({"app": supervisor.app.pid, "model": pid}))
    def down(self, **kwargs):
        pass
    def stopped(self):
        pass

supervisor = Supervisor(
    app=ChildSpec(name="app", argv=SLEEPER), model=child_spec(port), hooks=Hooks(),
    policy=Policy(tick=0.05, probe_interval=0.1),
)
supervisor.run()
"""


def test_children_do_not_outlive_a_supervisor_killed_outright(tmp_path: Path):
    report = tmp_path / "pids.json"
    process = subprocess.Popen(
        [sys.executable, "-c", SUPERVISED, str(free_port()), str(report)], cwd=ROOT
    )
    try:
        wait_until(report.exists)
        pids = json.loads(report.read_text())
        assert alive(pids["app"]) and alive(pids["model"])
        process.kill()
        process.wait(10)
        wait_until(lambda: not alive(pids["app"]) and not alive(pids["model"]))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.parametrize("policy_signal", [signal.SIGINT, signal.SIGHUP])
def test_ctrl_c_and_hangup_also_stop(policy_signal: int):
    hooks = Hooks(free_port())
    hooks.on_ready = lambda hooks, pid: os.kill(os.getpid(), policy_signal)
    assert supervise(hooks).run() == 0
    assert [event[0] for event in hooks.events] == ["ready", "stopped"]
