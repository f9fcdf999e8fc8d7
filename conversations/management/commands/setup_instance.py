"""Run by the start script after `migrate`: everything a fresh or restarted instance needs."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from conversations.services import replies_mark_interrupted
from providers.services import provider_sync_from_env


class Command(BaseCommand):
    help = (
        "Sync the OPENAI_* provider into the database, create the first admin from "
        "DJANGO_SUPERUSER_USERNAME/PASSWORD when set, and close replies a crash left open."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        provider = provider_sync_from_env(
            base_url=settings.OPENAI_BASE_URL,
            api_key=settings.OPENAI_API_KEY,
            model=settings.OPENAI_MODEL,
        )
        if provider is not None:
            self.stdout.write(f"Provider from OPENAI_BASE_URL: {provider.base_url}")

        username = os.environ.get("DJANGO_SUPERUSER_USERNAME")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        if username and password:
            user_model = get_user_model()
            if not user_model.objects.filter(username=username).exists():
                user_model.objects.create_superuser(
                    username=username,
                    email=os.environ.get("DJANGO_SUPERUSER_EMAIL", ""),
                    password=password,
                )
                self.stdout.write(f"Created admin user {username!r}.")

        closed = replies_mark_interrupted(older_than=settings.CHAT_ORPHAN_AFTER)
        if closed:
            self.stdout.write(f"Marked {len(closed)} unfinished replies as interrupted.")
