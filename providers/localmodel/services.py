"""Writes for the local model's provider row. Sync; the supervisor calls them directly (it
runs no event loop)."""

from __future__ import annotations

from django.db import transaction

from providers.localmodel import DISPLAY_NAME, PROVIDER_NAME
from providers.localmodel.limits import ServerLimits
from providers.models import ChatModel, Provider


def local_model_register(*, base_url: str, api_key: str, limits: ServerLimits) -> ChatModel:
    """Record the running local server as a provider with the model and limits it reported.

    One row per instance (found by its source), updated on every start: its port and key
    change from run to run. It becomes the default model only when no model is the default,
    so an admin's choice stands.
    """
    with transaction.atomic():
        provider, _ = Provider.objects.update_or_create(
            source=Provider.Source.LOCAL,
            defaults={
                "name": PROVIDER_NAME,
                "base_url": base_url,
                "api_key": api_key,
                "enabled": True,
                # A CPU-bound server answers one request at a time: a reply may wait its turn.
                "first_byte_timeout": 180.0,
                "include_usage": True,
            },
        )
        ChatModel.objects.filter(provider=provider).exclude(name=limits.model).update(enabled=False)
        chat_model, _ = ChatModel.objects.update_or_create(
            provider=provider,
            name=limits.model,
            defaults={
                "display_name": DISPLAY_NAME,
                "context_window": limits.context_window,
                "max_output_tokens": limits.max_output_tokens,
                "enabled": True,
            },
        )
        if not ChatModel.objects.filter(is_default=True).exclude(pk=chat_model.pk).exists():
            ChatModel.objects.filter(pk=chat_model.pk).update(is_default=True)
            chat_model.is_default = True
    return chat_model


def local_model_disable() -> int:
    """Hide the local model while its server is not running (its history stays linked)."""
    return Provider.objects.filter(source=Provider.Source.LOCAL, enabled=True).update(enabled=False)
