"""Turning what a provider says when something goes wrong into plain words and an error kind.

Pure functions over bytes and parsed JSON, shared by the streaming client, the chunk
interpreter and list_models. Every text that came from the provider passes through scrub()
before it reaches a message, because some providers echo the request (and so the key) back.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping

from .events import UpstreamError

__all__ = [
    "ProviderRequestError",
    "classify_error_object",
    "classify_status",
    "error_from_http",
    "error_object_message",
    "extract_error_text",
    "scrub",
]

MAX_MESSAGE_CHARS = 300

_BUDGET_WORDS = ("budget", "quota", "insufficient", "billing", "credit")
_BEARER_RE = re.compile(r"(?i)\bbearer\s+[^\s\"',;]+")
_SCRIPT_RE = re.compile(r"(?is)<(script|style)\b.*?</\1\s*>")
_TAG_RE = re.compile(r"(?s)<[^>]*>")
_SPACE_RE = re.compile(r"\s+")


class ProviderRequestError(Exception):
    """A non-streaming provider call (list_models, check_connection) failed.

    str(error) is a plain-words message fit to show to an administrator; it never contains
    the API key.
    """

    def __init__(self, message: str, *, kind: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status


def scrub(text: str, secret: str = "") -> str:
    """Remove the API key (and anything that looks like a bearer token) from text."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "[redacted]")
    return _BEARER_RE.sub("Bearer [redacted]", text)


def truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    text = _SPACE_RE.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def mentions_budget(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _BUDGET_WORDS)


def classify_status(status: int, text: str = "") -> str:
    """The error kind for an HTTP status; text (the provider's message) detects budgets."""
    if status in (400, 402, 429) and (status == 402 or mentions_budget(text)):
        return "budget"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status == 429:
        return "rate_limit"
    if status >= 500 or status == 409:
        return "server"
    if 400 <= status < 500:
        return "bad_request"
    return "protocol"


# Substrings of an error object's "type"/"code" (OpenAI, OpenRouter, vLLM, LiteLLM, llama.cpp),
# checked in this order.
_TYPE_KINDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("insufficient_quota", "budget", "quota", "billing", "payment", "credit"), "budget"),
    (("rate_limit", "ratelimit", "too_many_requests"), "rate_limit"),
    (("auth", "api_key", "permission", "unauthorized", "forbidden"), "auth"),
    (("not_found", "model_not_found", "notfound"), "not_found"),
    (("timeout", "timed_out"), "timeout"),
    (("server_error", "internal", "overloaded", "unavailable", "api_error"), "server"),
    (("invalid_request", "bad_request", "context_length", "validation", "invalid"), "bad_request"),
)


def classify_error_object(error: object) -> str | None:
    """The kind an in-band error object names, or None when it does not say clearly.

    error is the value of the "error" key: a dict ({"message", "type", "code"}), or a string.
    """
    if isinstance(error, str):
        return "budget" if mentions_budget(error) else None
    if not isinstance(error, Mapping):
        return None
    code = error.get("code")
    status = code if isinstance(code, int) else error.get("status")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    message = error.get("message")
    message_text = message if isinstance(message, str) else ""
    if isinstance(status, int) and 400 <= status < 600:
        return classify_status(status, message_text)
    labels = " ".join(
        str(value).lower() for value in (error.get("type"), code) if isinstance(value, str)
    )
    if mentions_budget(message_text):
        return "budget"
    for words, kind in _TYPE_KINDS:
        if any(word in labels for word in words):
            return kind
    return None


def error_object_message(error: object) -> str:
    """The human part of an error value: its message, with the type or code beside it."""
    if isinstance(error, str):
        return error
    if not isinstance(error, Mapping):
        return json.dumps(error, ensure_ascii=False, default=str)
    message = error.get("message")
    if isinstance(message, (dict, list)):
        message = json.dumps(message, ensure_ascii=False)
    label = error.get("type") or error.get("code")
    text = str(message) if message else ""
    # OpenRouter wraps the upstream provider's own words in metadata.raw.
    metadata = error.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("raw"), str):
        raw = metadata["raw"]
        text = f"{text} ({raw})" if text else raw
    if label and str(label) not in text:
        text = f"{text} [{label}]" if text else str(label)
    return text


def _json_error_text(body: object) -> str | None:
    if isinstance(body, list) and body:
        body = body[0]
    if not isinstance(body, Mapping):
        return None
    if body.get("error"):
        return error_object_message(body["error"])
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # FastAPI/pydantic validation errors
        parts = []
        for item in detail:
            if isinstance(item, Mapping) and "msg" in item:
                loc = ".".join(str(x) for x in item.get("loc", ()) if x != "body")
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if detail:
        return json.dumps(detail, ensure_ascii=False)
    for key in ("message", "msg", "error_message"):
        if isinstance(body.get(key), str):
            return body[key]
    return None


def extract_error_text(body: bytes, content_type: str = "") -> str:
    """The provider's own error message from a response body, or "" for an empty body.

    Understands the OpenAI shape {"error": {"message", "type", "code"}}, {"error": "text"},
    {"detail": ...}, {"message": ...}, plain text and HTML pages (tags stripped).
    """
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    if text[0] in "{[":
        try:
            parsed = json.loads(text)
        except ValueError:
            pass
        else:
            found = _json_error_text(parsed)
            return truncate(found if found is not None else text)
    if "html" in content_type.lower() or text[:1] == "<":
        text = _SCRIPT_RE.sub(" ", text)
        text = html.unescape(_TAG_RE.sub(" ", text))
    return truncate(text)


_KIND_PHRASES = {
    "auth": "The provider rejected the API key",
    "not_found": "The provider does not know this model or address",
    "rate_limit": "The provider is rate limiting requests",
    "budget": "The provider says the budget or quota is used up",
    "bad_request": "The provider rejected the request",
    "server": "The provider had an internal error",
    "timeout": "The provider timed out",
    "protocol": "The provider sent an answer that could not be understood",
}


def error_from_http(
    status: int,
    body: bytes,
    content_type: str = "",
    *,
    api_key: str = "",
    retry_after: float | None = None,
) -> UpstreamError:
    """The UpstreamError for an HTTP error response (status >= 400)."""
    provider_text = scrub(extract_error_text(body, content_type), api_key)
    kind = classify_status(status, provider_text)
    phrase = _KIND_PHRASES[kind]
    if provider_text:
        message = f"{phrase} (HTTP {status}): {provider_text}"
    else:
        message = f"{phrase}: HTTP {status} with an empty body."
    return UpstreamError(kind=kind, message=message, status=status, retry_after=retry_after)
