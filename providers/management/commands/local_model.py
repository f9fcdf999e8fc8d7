"""The bundled local model, for scripts/run.sh (see providers/localmodel/).

manage.py local_model prepare   exit 0: wanted and ready to serve; 3: not wanted; 1: failed
manage.py local_model serve --host H --port P   daphne and the model server, supervised
manage.py local_model status    what the local model is doing
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from providers.localmodel import runner
from providers.localmodel.status import status_read


class Command(BaseCommand):
    help = (
        "Prepare (install, weights) or serve the bundled local demo model that scripts/run.sh "
        "runs when no provider is configured, or show its status."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["prepare", "serve", "status"])
        parser.add_argument("--host", default="127.0.0.1", help="where daphne listens (serve)")
        parser.add_argument("--port", type=int, default=8000, help="daphne's port (serve)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "prepare":
            code = runner.prepare(out=sys.stdout, out_bytes=sys.stdout.buffer, err=sys.stderr)
        elif action == "serve":
            code = runner.serve(host=options["host"], port=options["port"], out=sys.stdout)
        else:
            current = status_read()
            if current is None:
                self.stdout.write("The local model has not run here.")
            else:
                self.stdout.write(f"{current.state}: {current.message}")
                if current.detail:
                    self.stdout.write(current.detail)
            code = 0
        # The exit code is what scripts/run.sh branches on.
        sys.exit(code)
