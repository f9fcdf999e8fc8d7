"""Recompute the usage roll-ups from the records (after a restore, an import, or a bug fix)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from usage.services import usage_rollups_rebuild


class Command(BaseCommand):
    help = "Recompute the daily usage roll-ups from the usage records, in the database."

    def handle(self, *args: Any, **options: Any) -> None:
        usage_rollups_rebuild()
        self.stdout.write("Usage roll-ups rebuilt.")
