"""Refusals about shares and imports, worded for the person who sees them."""

from __future__ import annotations

from conversations.errors import ChatError


class ShareNotFound(ChatError):
    # The same answer for a token that never existed, a revoked link and an expired one.
    def __init__(self) -> None:
        super().__init__("This link does not exist or is no longer shared.", code="not_found")


class SignInRequired(ChatError):
    def __init__(self) -> None:
        super().__init__("Sign in to open this shared conversation.", code="sign_in")


class ImportRefused(ChatError):
    """The file was not imported; nothing from it was stored."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="import_refused")
