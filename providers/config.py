"""What a provider call needs: the provider's settings and the chat request, plus the small
helpers that turn them into an HTTP request. Plain data; no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import scrub, truncate

__all__ = ["ChatRequest", "ProviderConfig"]


@dataclass(frozen=True)
class ProviderConfig:
    """One provider's connection settings; timeouts and caps are in seconds."""

    base_url: str  # up to and including the version, e.g. https://api.openai.com/v1
    api_key: str = field(default="", repr=False)
    extra_headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    connect_timeout: float = 10
    first_byte_timeout: float = 60
    idle_timeout: float = 60
    total_timeout: float = 600
    max_retries: int = 2
    retry_after_cap: float = 20
    include_usage: bool = True


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    params: Mapping[str, object] = field(default_factory=dict)


def request_url(config: ProviderConfig, path: str) -> str:
    return config.base_url.rstrip("/") + path


def request_headers(config: ProviderConfig) -> dict[str, str]:
    # Accept mirrors the official SDK; identity encoding because a compressed event stream
    # can be held back by the compressor, delaying tokens.
    headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    headers.update(config.extra_headers)
    return headers


def request_body(request: ChatRequest, stream_options: bool) -> dict[str, object]:
    body: dict[str, object] = {"model": request.model, "messages": request.messages}
    body.update((key, value) for key, value in request.params.items() if value is not None)
    body["stream"] = True
    if stream_options:
        body["stream_options"] = {"include_usage": True}
    return body


def host_of(config: ProviderConfig) -> str:
    try:
        return urlsplit(config.base_url).hostname or config.base_url
    except ValueError:
        return config.base_url


def describe_exception(exc: BaseException, config: ProviderConfig) -> str:
    """An exception as words fit for a message: the key scrubbed, length bounded."""
    text = str(exc) or type(exc).__name__
    return truncate(scrub(text, config.api_key), 200)
