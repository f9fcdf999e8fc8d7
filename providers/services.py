"""Writes for providers and models. Sync; call through database_sync_to_async from async code."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.db import transaction

from providers.client import ProviderConfig, check_chat, check_connection, list_models
from providers.errors import ProviderRequestError
from providers.models import ChatModel, Provider
from providers.presets import ModelPreset, ProviderPreset, get_preset

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


# -- admin actions --------------------------------------------------------------------------


def chat_model_make_default(*, chat_model: ChatModel) -> None:
    """Make this the one default model (for new chats of users who picked none)."""
    with transaction.atomic():
        ChatModel.objects.filter(is_default=True).exclude(pk=chat_model.pk).update(is_default=False)
        if not chat_model.is_default:
            chat_model.is_default = True
            chat_model.save(update_fields=["is_default"])


def providers_set_enabled(*, provider_ids: Iterable[int], enabled: bool) -> int:
    """Enable or disable providers; a disabled one's models leave the pickers, history stays."""
    return Provider.objects.filter(pk__in=list(provider_ids)).update(enabled=enabled)


def chat_models_set_enabled(*, model_ids: Iterable[int], enabled: bool) -> int:
    """Enable or disable models; a disabled one disappears from pickers, its history stays."""
    return ChatModel.objects.filter(pk__in=list(model_ids)).update(enabled=enabled)


def provider_add_preset_models(*, provider: Provider, preset: ProviderPreset) -> list[ChatModel]:
    """Create the preset's models for a provider just added from it (enabled, ready to chat).

    The first becomes the default when no enabled model is the default yet, so an instance
    set up from a preset can chat at once.
    """
    created = []
    with transaction.atomic():
        if provider.preset != preset.key:
            provider.preset = preset.key
            provider.save(update_fields=["preset"])
        for model_preset in preset.models:
            chat_model, made = ChatModel.objects.get_or_create(
                provider=provider,
                name=model_preset.name,
                defaults={**model_preset.model_fields(), "enabled": True},
            )
            if made:
                created.append(chat_model)
        has_default = ChatModel.objects.filter(
            is_default=True, enabled=True, provider__enabled=True
        ).exists()
        if created and not has_default and provider.enabled:
            chat_model_make_default(chat_model=created[0])
    return created


@dataclass(frozen=True)
class FetchResult:
    listed: list[str]
    added: list[str]
    enabled: bool  # whether the added models were enabled
    unlisted: list[str]  # models stored for this provider that it no longer lists

    def describe(self, provider: Provider) -> str:
        if not self.listed:
            return f"{provider.name} lists no models. Add them by hand in the Models section."
        count = len(self.listed)
        text = f"{provider.name} lists {count} model{'s' if count != 1 else ''}."
        if not self.added:
            text += " All of them were already here."
        elif self.enabled:
            text += f" Added and enabled: {_names(self.added)}."
        else:
            text += (
                f" Added, disabled until you enable them: {_names(self.added)}. "
                "Users see a model only once it is enabled."
            )
        if self.unlisted:
            text += " No longer listed (kept, so their conversations stay usable): " + _names(
                self.unlisted
            )
            text += "."
        return text


def _names(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def provider_fetch_models(*, provider: Provider) -> FetchResult:
    """Read GET {base}/models and store the models this app does not know yet.

    On a provider's first fetch (it has no models yet) the listed models are enabled: the admin
    is setting the provider up and wants to chat. Later fetches add new models disabled, so
    nothing new appears in users' pickers until an admin chooses it (OpenAI's list, for one,
    also holds models that cannot chat). Raises ProviderRequestError with plain words; a
    provider without a /models list is told apart so the admin knows to enter models by hand.
    """
    try:
        names = async_to_sync(list_models)(provider.to_config())
    except ProviderRequestError as exc:
        if exc.kind == "not_found":
            raise ProviderRequestError(
                f"{provider.name} has no model list (GET /models was not found). That is "
                "fine for chatting: add its models by hand in the Models section, using the "
                "names its documentation gives.",
                kind=exc.kind,
                status=exc.status,
            ) from None
        raise
    template: ModelPreset = (
        preset.fetched if (preset := get_preset(provider.preset)) else ModelPreset()
    )
    with transaction.atomic():
        known = set(ChatModel.objects.filter(provider=provider).values_list("name", flat=True))
        first_fetch = not known
        added = [name for name in names if name not in known]
        ChatModel.objects.bulk_create(
            [
                ChatModel(
                    provider=provider,
                    **{**template.model_fields(), "display_name": ""},
                    name=name,
                    enabled=first_fetch,
                )
                for name in added
            ]
        )
    listed = set(names)
    return FetchResult(
        listed=list(names),
        added=added,
        enabled=first_fetch,
        unlisted=sorted(name for name in known if name not in listed),
    )


def provider_test_connection(*, provider: Provider) -> str:
    """A plain-words success message, or ProviderRequestError saying what is wrong.

    Asks for the model list; a provider without one is tested with a one-token chat with its
    first enabled model instead.
    """
    config = provider.to_config()
    try:
        return async_to_sync(check_connection)(config)
    except ProviderRequestError as exc:
        if exc.kind != "not_found":
            raise
        model = provider.models.filter(enabled=True).order_by("name").first()
        if model is None:
            raise ProviderRequestError(
                f"{provider.name} has no model list at /models, and no enabled model to try a "
                "chat with. Add a model by hand, then test again.",
                kind=exc.kind,
                status=exc.status,
            ) from None
        message = async_to_sync(check_chat)(config, model.name)
        return f"{message} (It has no model list at /models; models are entered by hand.)"
