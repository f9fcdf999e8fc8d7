"""System checks for the chat settings (run by `manage.py check` and at start-up)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Warning, register


@register()
def check_websocket_limits(**kwargs: Any) -> list[Warning]:
    if settings.CHAT_WEBSOCKET_MAX_MESSAGE_BYTES < settings.CHAT_MAX_FRAME_BYTES:
        return [
            Warning(
                "CHAT_WEBSOCKET_MAX_MESSAGE_BYTES is below CHAT_MAX_FRAME_BYTES: frames between "
                "the two close the socket instead of getting the app's readable error.",
                hint="Raise CHAT_WEBSOCKET_MAX_MESSAGE_BYTES (daphne's limit) above the app's.",
                id="conversations.W001",
            )
        ]
    return []
