"""Extra HTTP headers an admin sets on a provider: checking them, and hiding secret values.

Some providers authenticate with a header of their own (Azure's ``api-key``, a gateway's
``X-Api-Key``), so header values are treated like the API key: a value whose header name looks
secret is never rendered back; the admin form shows a placeholder that means "unchanged".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

__all__ = ["HIDDEN_VALUE", "HeaderError", "clean_headers", "headers_for_display", "is_secret"]

HIDDEN_VALUE = "(hidden: leave as it is to keep the stored value)"

_SECRET_WORDS = (
    "auth",
    "key",
    "token",
    "secret",
    "password",
    "cookie",
    "session",
    "signature",
    "credential",
)
# RFC 9110 field-name: a token.
_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# What this app or the HTTP client sets itself; overriding them would break requests.
_FORBIDDEN = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "accept-encoding",
        "accept",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-connection",
    }
)
MAX_HEADERS = 20
MAX_VALUE_CHARS = 4000


class HeaderError(ValueError):
    pass


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def headers_for_display(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The headers with each secret value replaced by HIDDEN_VALUE."""
    return {
        name: (HIDDEN_VALUE if is_secret(name) else value)
        for name, value in (headers or {}).items()
    }


def clean_headers(text: str, stored: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers from the admin's JSON text; HIDDEN_VALUE keeps the stored value of that header.

    Raises HeaderError with plain words. Never puts a stored value into a message.
    """
    text = (text or "").strip()
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise HeaderError(
            f'Extra headers must be a JSON object, such as {{"X-Title": "Team Chat"}} '
            f"(line {exc.lineno}: {exc.msg})."
        ) from None
    if not isinstance(parsed, dict):
        raise HeaderError('Extra headers must be a JSON object, such as {"X-Title": "Team Chat"}.')
    if len(parsed) > MAX_HEADERS:
        raise HeaderError(f"At most {MAX_HEADERS} extra headers are allowed.")
    stored_by_lower = {name.lower(): value for name, value in (stored or {}).items()}
    seen: set[str] = set()
    cleaned: dict[str, str] = {}
    for name, value in parsed.items():
        if not _NAME_RE.match(name):
            raise HeaderError(f"{name!r} is not a valid header name.")
        lowered = name.lower()
        if lowered in seen:
            raise HeaderError(f"The header {name} is given twice.")
        seen.add(lowered)
        if lowered in _FORBIDDEN:
            raise HeaderError(f"The header {name} is set by this app and cannot be changed.")
        if value == HIDDEN_VALUE:
            if lowered not in stored_by_lower:
                raise HeaderError(f"Enter a value for the header {name}.")
            value = stored_by_lower[lowered]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise HeaderError(f"The value of the header {name} must be text.")
        if len(value) > MAX_VALUE_CHARS:
            raise HeaderError(f"The value of the header {name} is too long.")
        if any(ord(char) < 0x20 or ord(char) > 0x7E for char in value):
            # Line breaks would inject headers; httpx sends only ASCII reliably.
            raise HeaderError(
                f"The value of the header {name} may contain only printable ASCII characters."
            )
        cleaned[name] = value
    return cleaned
