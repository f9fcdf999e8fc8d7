"""Writes for providers and models. Sync; call through database_sync_to_async from async code."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from django.db import transaction

from providers.client import ProviderConfig, list_models
from providers.errors import ProviderRequestError
from providers.models import ChatModel, Provider

logger = logging.getLogger(__name__)

ENV_PROVIDER_NAME = "Default provider (OPENAI_BASE_URL)"


def provider_sync_from_env(*, base_url: str, api_key: str, model: str) -> Provider | None:
    """Mirror the conventional OPENAI_* variables into the database as one provider.

    Keeping it in the database (rather than reading the variables on every request) means the
    rest of the app knows only one kind of provider. Without OPENAI_MODEL the provider's first
    listed model is used. Returns None when OPENAI_BASE_URL is not set.
    """
    if not base_url:
        return None
    base_url = base_url.rstrip("/")
    if not model:
        try:
            names = async_to_sync(list_models)(ProviderConfig(base_url=base_url, api_key=api_key))
        except ProviderRequestError as exc:
            logger.warning("OPENAI_MODEL is not set and the model list failed: %s", exc)
            names = []
        if not names:
            logger.warning("OPENAI_MODEL is not set; set it to the model to chat with.")
            return None
        model = names[0]
    with transaction.atomic():
        provider, _ = Provider.objects.update_or_create(
            source=Provider.Source.ENVIRONMENT,
            defaults={
                "name": ENV_PROVIDER_NAME,
                "base_url": base_url,
                "api_key": api_key,
                "enabled": True,
            },
        )
        chat_model, _ = ChatModel.objects.update_or_create(
            provider=provider, name=model, defaults={"enabled": True}
        )
        # The environment's model is the default unless an admin chose another one.
        if not ChatModel.objects.filter(is_default=True).exclude(pk=chat_model.pk).exists():
            ChatModel.objects.filter(pk=chat_model.pk).update(is_default=True)
    return provider
