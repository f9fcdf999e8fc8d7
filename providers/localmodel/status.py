"""What the local model is doing, kept in ``VAR_DIR/local-model/status.json``.

A file rather than a table: it is written by the run command before the app (and sometimes its
database) is up, and read by staff pages; one machine runs the local model, so one file serves.
Written atomically (a temporary file renamed over the old one), so a reader never sees half.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

# States, in the order a run goes through them.
OFF = "off"  # LOCAL_MODEL=off
NOT_NEEDED = "not_needed"  # a provider is configured
INSTALLING = "installing"
STARTING = "starting"
READY = "ready"
RESTARTING = "restarting"  # the server died; it is started again after a pause
FAILED = "failed"
STOPPED = "stopped"  # the app stopped, and the model server with it

# Stages a failure can come from: what did not work.
STAGE_INSTALL = "install"  # pip could not install (build) the local extra
STAGE_IMPORT = "import"  # installed, but llama_cpp does not load
STAGE_WEIGHTS = "weights"  # the GGUF could not be written
STAGE_SERVER = "server"  # the model server did not start or keeps dying

HOW_TO_CONFIGURE = (
    "To chat with a real model instead, configure a provider: add one in the admin "
    "(/admin/), or start the app with OPENAI_BASE_URL, OPENAI_API_KEY and OPENAI_MODEL set. "
    "LOCAL_MODEL=off stops trying the local model."
)


@dataclass(frozen=True)
class LocalModelStatus:
    state: str
    message: str
    stage: str = ""  # for FAILED and RESTARTING: see STAGE_*
    detail: str = ""  # the end of the relevant log, for staff
    log_path: str = ""
    base_url: str = ""
    pid: int | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    restarts: int = 0
    updated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def is_problem(self) -> bool:
        return self.state in (FAILED, RESTARTING)

    @property
    def is_pending(self) -> bool:
        return self.state in (INSTALLING, STARTING)

    @property
    def shown_to_staff(self) -> bool:
        # Off, not needed and stopped are nothing to act on.
        return self.state in (INSTALLING, STARTING, READY, RESTARTING, FAILED)

    @property
    def level(self) -> str:
        """error/warning/info: the notice's look (the admin's message classes, too)."""
        return {FAILED: "error", RESTARTING: "warning"}.get(self.state, "info")

    @property
    def how_to_configure(self) -> str:
        return HOW_TO_CONFIGURE


def local_model_dir() -> Path:
    return Path(settings.VAR_DIR) / "local-model"


def status_path() -> Path:
    return local_model_dir() / "status.json"


def status_write(status: LocalModelStatus) -> None:
    path = status_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(asdict(status), indent=2))
    os.replace(temporary, path)


def status_read() -> LocalModelStatus | None:
    """The last status written, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads(status_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        return None
    known = {f.name for f in fields(LocalModelStatus)}
    try:
        return LocalModelStatus(**{k: v for k, v in data.items() if k in known})
    except TypeError:
        return None


def log_tail(path: Path, lines: int = 20, max_chars: int = 4000) -> str:
    """The last lines of a log, for a status detail."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - 64 * 1024))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    tail = "\n".join(text.rstrip().splitlines()[-lines:])
    return tail[-max_chars:]
