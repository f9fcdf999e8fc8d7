"""Reads that decide whether the local model is wanted."""

from __future__ import annotations

from django.conf import settings

from providers.models import ChatModel, Provider


def local_model_unwanted_reason() -> str | None:
    """Why the local model should not run, or None when it should (no provider configured).

    "Configured" means a model someone can chat with: an enabled model of an enabled provider
    other than the local one, or OPENAI_BASE_URL (even when its model could not be synced).
    """
    if settings.LOCAL_MODEL == "off":
        return "LOCAL_MODEL=off"
    if settings.OPENAI_BASE_URL:
        return "OPENAI_BASE_URL is set"
    configured = (
        ChatModel.objects.filter(enabled=True, provider__enabled=True)
        .exclude(provider__source=Provider.Source.LOCAL)
        .select_related("provider")
        .first()
    )
    if configured is not None:
        return f"a provider is configured ({configured.provider.name}: {configured.label})"
    return None
