"""The app as its users run it, for the browser tests: a PostgreSQL database made for this run,
then ``migrate``, ``collectstatic`` and ``setup_instance`` (as scripts/run.sh does), then daphne.

No Django imports here: Playwright's sync API keeps an event loop running in the test thread,
where the ORM refuses to work. Users are inserted and stored state is read with plain psycopg.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
API_KEY = "sk-e2e-secret"
MODEL = "fake-model"
ADMIN = ("admin", "e2e admin password 7")
PASSWORD = "e2e user password 7"  # every user made by LiveApp.create_user

# Variables the app reads (and their NAME_FILE forms). The surrounding shell may set some of
# them; the server under test must see only ours.
_APP_PREFIXES = (
    "ALLOWED_HOSTS",
    "BEHIND_PROXY",
    "CHANNEL_",
    "CHAT_",
    "CSRF_",
    "DATABASE_",
    "DEBUG",
    "DJANGO_SUPERUSER_",
    "HTTPS",
    "LOG_LEVEL",
    "OPENAI_",
    "REDIS_",
    "SECRET_KEY",
    "SECURE_",
    "TIME_ZONE",
    "VAR_DIR",
)


@dataclass(frozen=True)
class Account:
    username: str
    password: str


@dataclass
class LiveApp:
    url: str
    dsn: str
    log_path: Path
    process: subprocess.Popen[bytes]
    password_hash: str = ""  # of PASSWORD
    _users: int = 0

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]

    def create_user(self, prefix: str = "user") -> Account:
        """A fresh, non-staff user (all share one password, hashed once per run)."""
        self._users += 1
        username = f"{prefix}{self._users}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO auth_user (username, password, email, first_name, last_name,"
                " is_superuser, is_staff, is_active, date_joined)"
                " VALUES (%s, %s, %s, '', '', false, false, true, now())",
                (username, self.password_hash, f"{username}@example.com"),
            )
        return Account(username, PASSWORD)

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int = 0) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(database_url: str, var_dir: Path, upstream_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_APP_PREFIXES)}
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL=database_url,
        DATABASE_POOL="0",
        DEBUG="0",
        SECRET_KEY="e2e-" + "k" * 60,
        VAR_DIR=str(var_dir),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        OPENAI_BASE_URL=upstream_url,
        OPENAI_MODEL=MODEL,
        OPENAI_API_KEY=API_KEY,
        DJANGO_SUPERUSER_USERNAME=ADMIN[0],
        DJANGO_SUPERUSER_PASSWORD=ADMIN[1],
        PYTHONUNBUFFERED="1",
        # A title call after each first exchange would take fake-upstream scripts queued for
        # the next reply; titles are tested in tests/conversations.
        CHAT_GENERATED_TITLES="0",
    )
    return env


def _manage(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )


def create_database(name: str) -> str:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{PG_SERVER}/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def start(database_url: str, var_dir: Path, upstream_url: str) -> LiveApp:
    """Prepare the database and static files, then start daphne and wait until it answers."""
    env = _environment(database_url, var_dir, upstream_url)
    _manage(env, "migrate", "--noinput")
    _manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    _manage(env, "setup_instance")

    port = _free_port()
    log_path = var_dir / "daphne.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatsite.serve", "-b", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    app = LiveApp(
        url=f"http://127.0.0.1:{port}", dsn=database_url, log_path=log_path, process=process
    )
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited with {process.returncode}:\n{app.log_since()}")
        try:
            with urllib.request.urlopen(f"{app.url}/accounts/login/", timeout=2) as response:
                if response.status == 200:
                    return app
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            stop(app)
            raise RuntimeError(f"daphne did not answer within 30 s:\n{app.log_since()}")
        time.sleep(0.1)


def stop(app: LiveApp) -> None:
    app.process.terminate()
    try:
        app.process.wait(10)
    except subprocess.TimeoutExpired:
        app.process.kill()
        app.process.wait(5)


def chromium_path() -> str | None:
    path = "/usr/bin/chromium"
    return path if shutil.which(path) else None
