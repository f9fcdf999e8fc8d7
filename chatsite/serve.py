"""Serve the app with daphne, with the server options that come from settings.

    python -m chatsite.serve --bind 127.0.0.1 --port 8000 [other daphne options]

This is daphne's own command line with chatsite.asgi:application as the application, plus:

- the websocket size limit from ``CHAT_WEBSOCKET_MAX_MESSAGE_BYTES``: daphne (through autobahn's
  ``maxMessagePayloadSize`` and ``maxFramePayloadSize``) drops a connection as soon as an incoming
  message or frame grows past it, before any of it reaches the app, so no client, signed in or
  not, can make the server buffer more. Messages under that limit but over
  ``CHAT_MAX_FRAME_BYTES`` reach the app, which answers them with a readable error frame;
- a thread pool for database work sized like the database connection pool (``ASGI_THREADS``,
  default ``DATABASE_POOL_MAX`` or 20): the app's database calls run on the event loop's default
  pool, and asyncio's default of CPUs + 4 threads would queue a burst of sends behind each other;
- the tokenizer loaded before the first message needs it.

scripts/run.sh, the tests and the benchmark all start the server this way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# daphne.server reads this when it is imported.
os.environ.setdefault("ASGI_THREADS", os.environ.get("DATABASE_POOL_MAX", "20"))

# Twisted's reactor must be chosen before anything imports Twisted: daphne.server installs the
# asyncio one when it is imported, so it comes before the rest of daphne and Django.
import daphne.server  # noqa: F401

APPLICATION = "chatsite.asgi:application"


def daphne_arguments(argv: Sequence[str]) -> list[str]:
    """daphne's arguments: the size limits from settings, then argv, then the application."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    from django.conf import settings

    limit = str(settings.CHAT_WEBSOCKET_MAX_MESSAGE_BYTES)
    args = ["--websocket-max-message-size", limit, "--websocket-max-frame-size", limit, *argv]
    if not any(arg.endswith(APPLICATION) for arg in argv):
        args.append(APPLICATION)
    return args


def warm_up() -> None:
    """Load what the first message would otherwise wait for (the tokenizer's tables)."""
    import django

    django.setup()
    from conversations.tokens import count_tokens

    count_tokens("warm up")


def main(argv: Sequence[str] | None = None) -> None:
    from daphne.cli import CommandLineInterface

    arguments = daphne_arguments(sys.argv[1:] if argv is None else argv)
    warm_up()
    CommandLineInterface().run(arguments)


if __name__ == "__main__":
    main()
