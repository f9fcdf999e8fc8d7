"""Recompute the usage roll-ups from the records (after a restore, an import, or a bug fix)."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from usage.services import usage_rollups_rebuild


class Command(BaseCommand):
    help = "Recompute the daily usage roll-ups from the usage records, in the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=date.fromisoformat, help="first day (YYYY-MM-DD)")

    def handle(self, *args: Any, since: date | None = None, **options: Any) -> None:
        usage_rollups_rebuild(since=since)
        self.stdout.write("Usage roll-ups rebuilt" + (f" from {since}." if since else "."))
