"""Settings for the team chat site.

Every value comes from the environment through the typed helpers in ``chatsite.env``. With no
environment at all the site runs locally: SQLite under ``var/``, the in-memory channel layer, and a
secret key generated once and kept in ``var/secret_key``. Production sets ``DATABASE_URL``
(PostgreSQL through psycopg 3), ``REDIS_URL`` (channels-redis), ``SECRET_KEY``, ``ALLOWED_HOSTS``,
``CSRF_TRUSTED_ORIGINS`` and ``HTTPS=true``.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from chatsite.env import env_bool, env_decimal, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    configured = env_str("SECRET_KEY")
    if configured:
        return configured
    # Zero-setup runs still need a stable key (sessions survive restarts), so make one once.
    key_file = VAR_DIR / "secret_key"
    try:
        return key_file.read_text().strip()
    except FileNotFoundError:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(64)
        key_file.write_text(key)
        key_file.chmod(0o600)
        return key
    except OSError as exc:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set and {key_file} is unusable: {exc}"
        ) from exc


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "providers",
    "conversations",
    "sharing",
    "teams",
    "usage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "teams.context_processors.navigation",
            ],
        },
    },
]

# --- Database ----------------------------------------------------------------------------------
_database_url = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
if _database_url.startswith("sqlite:"):
    VAR_DIR.mkdir(parents=True, exist_ok=True)
_database = dj_database_url.parse(_database_url)
if _database["ENGINE"] == "django.db.backends.postgresql":
    # Under ASGI every database_sync_to_async call may land on another thread, so persistent
    # per-thread connections (CONN_MAX_AGE > 0) leak; psycopg's pool is the supported answer.
    _database["CONN_MAX_AGE"] = 0
    if env_bool("DATABASE_POOL", True):
        _database.setdefault("OPTIONS", {})["pool"] = {
            "min_size": env_int("DATABASE_POOL_MIN", 2),
            "max_size": env_int("DATABASE_POOL_MAX", 20),
            "timeout": 10,
        }
elif _database["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and IMMEDIATE transactions keep SQLite usable with the writer threads of streaming.
    _database.setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer -----------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        # redis-py's 5 s default equals channels-redis's 5 s blocking read, so
                        # a quiet channel's read failed with a timeout (the socket: code 1011).
                        "socket_timeout": env_int("CHANNEL_REDIS_SOCKET_TIMEOUT", 30),
                        "socket_connect_timeout": 5,
                        # redis-py refuses the 101st connection by default (MaxConnectionsError).
                        "max_connections": env_int("CHANNEL_REDIS_MAX_CONNECTIONS", 1000),
                    }
                ],
                # channels-redis drops group messages silently above capacity (default 100).
                "capacity": env_int("CHANNEL_CAPACITY", 2000),
                "expiry": 60,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Auth --------------------------------------------------------------------------------------
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files: served by WhiteNoise so the one run command needs no other web server ---------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security ----------------------------------------------------------------------------------
# HTTPS=true is for deployments behind TLS; it turns on everything `check --deploy` asks for.
HTTPS = env_bool("HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
if env_bool("BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Model output is hostile input: besides sanitizing it, the page forbids inline script and any
# third-party request, so even a sanitizer bug cannot run code or call out.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

# --- Product limits and defaults -----------------------------------------------------------------
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 32_000)
# Websocket frames larger than this are refused by the consumer with a clear error frame.
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 256 * 1024)
CHAT_SIDEBAR_PAGE_SIZE = env_int("CHAT_SIDEBAR_PAGE_SIZE", 30)
# Largest export file (bytes) the import form accepts; a bigger one is refused with its size.
CHAT_IMPORT_MAX_BYTES = env_int("CHAT_IMPORT_MAX_BYTES", 20 * 1024 * 1024)
# A conversation opens with its last this-many messages; older ones load as the user scrolls up.
CHAT_THREAD_PAGE_SIZE = env_int("CHAT_THREAD_PAGE_SIZE", 40)
# After the first exchange the model writes a short title (one small extra call).
CHAT_GENERATED_TITLES = env_bool("CHAT_GENERATED_TITLES", True)
# A reply in progress is written to the database at most this often (seconds).
CHAT_FLUSH_INTERVAL = float(env_int("CHAT_FLUSH_INTERVAL_MS", 1000)) / 1000
# Tokens arriving faster than this are coalesced into one websocket frame (seconds).
CHAT_FRAME_INTERVAL = float(env_int("CHAT_FRAME_INTERVAL_MS", 16)) / 1000
# Frames for sockets on other processes (through channels-redis) are coalesced more.
CHAT_REMOTE_FRAME_INTERVAL = float(env_int("CHAT_REMOTE_FRAME_INTERVAL_MS", 50)) / 1000
# Context window assumed for models whose window nobody has entered.
CHAT_DEFAULT_CONTEXT_WINDOW = env_int("CHAT_DEFAULT_CONTEXT_WINDOW", 8192)
CHAT_DEFAULT_MAX_OUTPUT_TOKENS = env_int("CHAT_DEFAULT_MAX_OUTPUT_TOKENS", 1024)
CHAT_CONTEXT_SAFETY_MARGIN = env_int("CHAT_CONTEXT_SAFETY_MARGIN", 64)
# What happens to turns that no longer fit a model's window, unless the model or the
# conversation chooses: "summarize" (a model writes a summary that is sent in their place) or
# "drop" (they are left out). Summarize is the default because the model then keeps the gist of
# the whole conversation, which is what people expect of a chat that "remembers"; it costs one
# extra call each time about half a window of new history has to be folded in, and falls back
# to drop (saying so) when that call fails.
CHAT_CONTEXT_STRATEGY = env_str("CHAT_CONTEXT_STRATEGY", "summarize")
if CHAT_CONTEXT_STRATEGY not in ("summarize", "drop"):
    raise ImproperlyConfigured(
        f"CHAT_CONTEXT_STRATEGY must be summarize or drop, not {CHAT_CONTEXT_STRATEGY!r}"
    )
# Longest summary asked for (tokens); never more than a quarter of a model's prompt budget.
CHAT_SUMMARY_MAX_TOKENS = env_int("CHAT_SUMMARY_MAX_TOKENS", 600)
# Summary calls one request may make before its reply starts; a longer backlog (a very long
# conversation meeting a small model) is folded in over the next requests, the rest of it left
# out meanwhile.
CHAT_SUMMARY_MAX_CALLS = env_int("CHAT_SUMMARY_MAX_CALLS", 3)

# The provider configured from the conventional OpenAI variables (synced by `manage.py setup`).
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_MODEL = env_str("OPENAI_MODEL")
# A reply whose row has not been touched for this long has lost its process (a live one flushes
# at least every 5 flush intervals); the start-up check and the periodic sweep mark it interrupted.
CHAT_ORPHAN_AFTER = timedelta(seconds=env_int("CHAT_ORPHAN_AFTER_SECONDS", 30))
# Per-user limit on replies generating at once, checked in the send's transaction (so it holds
# across processes); 0 turns it off. The request rate is limited per user and team below
# (LIMIT_USER_REQUESTS_PER_MINUTE, usage/).
CHAT_MAX_CONCURRENT_REPLIES = env_int("CHAT_MAX_CONCURRENT_REPLIES", 4)
# Daphne closes a websocket (code 1009) whose incoming message is larger than this, before the
# app sees it: a bound on memory for anyone, signed in or not. Keep it above
# CHAT_MAX_FRAME_BYTES, which the app answers with a readable error instead.
CHAT_WEBSOCKET_MAX_MESSAGE_BYTES = env_int("CHAT_WEBSOCKET_MAX_MESSAGE_BYTES", 1024 * 1024)

# --- The bundled local model (providers/localmodel/) --------------------------------------------
# With no provider configured, scripts/run.sh also runs a small model on loopback so a fresh
# install can chat at once. "off" never starts it; a configured provider makes it unnecessary.
LOCAL_MODEL = env_str("LOCAL_MODEL", "auto").strip().lower()
if LOCAL_MODEL in {"0", "false", "no", "off"}:
    LOCAL_MODEL = "off"
elif LOCAL_MODEL in {"", "1", "true", "yes", "on", "auto"}:
    LOCAL_MODEL = "auto"
else:
    raise ImproperlyConfigured(f"LOCAL_MODEL must be auto or off, not {LOCAL_MODEL!r}")
# 0: a free loopback port each run. The server never listens beyond 127.0.0.1.
LOCAL_MODEL_PORT = env_int("LOCAL_MODEL_PORT", 0)
LOCAL_MODEL_CONTEXT = env_int("LOCAL_MODEL_CONTEXT", 8192)
LOCAL_MODEL_MAX_TOKENS = env_int("LOCAL_MODEL_MAX_TOKENS", 512)

# --- Teams, usage and limits ----------------------------------------------------------------------
# Staff may open other people's conversations for review (each view is written to the audit log).
# Off by default: admins see usage, not content.
USAGE_STAFF_CAN_READ_CONVERSATIONS = env_bool("USAGE_STAFF_CAN_READ_CONVERSATIONS", False)
# Site defaults for limits nobody has set (0 = no limit). They apply to every user (over all their
# usage) and every team (over the usage charged to it); staff and team admins override them.
USAGE_DEFAULT_USER_LIMITS = {
    "requests_per_minute": env_int("LIMIT_USER_REQUESTS_PER_MINUTE", 60),
    "tokens_per_day": env_int("LIMIT_USER_TOKENS_PER_DAY", 0),
    "tokens_per_month": env_int("LIMIT_USER_TOKENS_PER_MONTH", 0),
    "cost_per_day": env_decimal("LIMIT_USER_COST_PER_DAY", "0"),
    "cost_per_month": env_decimal("LIMIT_USER_COST_PER_MONTH", "0"),
}
USAGE_DEFAULT_TEAM_LIMITS = {
    "requests_per_minute": env_int("LIMIT_TEAM_REQUESTS_PER_MINUTE", 0),
    "tokens_per_day": env_int("LIMIT_TEAM_TOKENS_PER_DAY", 0),
    "tokens_per_month": env_int("LIMIT_TEAM_TOKENS_PER_MONTH", 0),
    "cost_per_day": env_decimal("LIMIT_TEAM_COST_PER_DAY", "0"),
    "cost_per_month": env_decimal("LIMIT_TEAM_COST_PER_MONTH", "0"),
}
