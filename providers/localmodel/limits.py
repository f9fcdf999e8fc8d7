"""A local model server's limits, as the server itself reports them.

History trimming needs each model's context window and reply limit. For the local model they
are read from the running server rather than assumed: llama.cpp's ``GET /props`` (which our
launcher, server.py, also answers) gives the context the model was loaded with
(``default_generation_settings.n_ctx``) and the reply limit (``params.n_predict``, -1 for none);
``GET /v1/models`` gives the model id, and some servers put a context length there too.

No Django here: plain parsing, plus one small blocking fetch for the supervisor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class LimitsUnavailable(Exception):
    """The server did not answer (yet), or not in a shape that gives its limits."""


@dataclass(frozen=True)
class ServerLimits:
    model: str
    context_window: int
    max_output_tokens: int


# Names servers use for a model's context length in their model list (vLLM, LM Studio, others).
_MODEL_CONTEXT_KEYS = ("max_model_len", "context_length", "context_window", "n_ctx")


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = int(value)
    return number if number > 0 else None


def parse_models(payload: Any) -> list[tuple[str, int | None]]:
    """(model id, context length if the entry gives one) for each model listed."""
    items = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        raise LimitsUnavailable("The model list is not an OpenAI-style list.")
    models: list[tuple[str, int | None]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
        context = None
        for source in (item, meta):
            for key in _MODEL_CONTEXT_KEYS:
                context = context or _positive_int(source.get(key))
        models.append((item["id"], context))
    return models


def parse_props(payload: Any) -> tuple[int | None, int | None]:
    """(context window, reply limit) from llama.cpp's /props; None for what it does not say."""
    if not isinstance(payload, dict):
        return None, None
    defaults = payload.get("default_generation_settings")
    defaults = defaults if isinstance(defaults, dict) else {}
    params = defaults.get("params") if isinstance(defaults.get("params"), dict) else {}
    context = _positive_int(defaults.get("n_ctx")) or _positive_int(payload.get("n_ctx"))
    # n_predict -1 (or absent) means the server sets no reply limit of its own.
    reply = _positive_int(params.get("n_predict")) or _positive_int(defaults.get("n_predict"))
    return context, reply


def limits_from(
    models_payload: Any, props_payload: Any, *, default_reply_share: int = 4
) -> ServerLimits:
    """Combine the two answers. A server that sets no reply limit of its own gets a quarter of
    its context for replies (history trimming reserves that room out of the window)."""
    models = parse_models(models_payload)
    if not models:
        raise LimitsUnavailable("The server lists no model.")
    model, listed_context = models[0]
    context, reply = parse_props(props_payload)
    context = context or listed_context
    if context is None:
        raise LimitsUnavailable("The server does not say its context window.")
    if reply is None:
        reply = context // default_reply_share
    return ServerLimits(model=model, context_window=context, max_output_tokens=reply)


def server_root(base_url: str) -> str:
    """llama.cpp serves /props beside /v1, not under it."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def fetch_limits(base_url: str, api_key: str, timeout: float = 5.0) -> ServerLimits:
    """Ask a running server for its limits. Blocking: for the supervisor, not the event loop.

    Raises LimitsUnavailable while the server is not answering yet or answers with an error.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(timeout=timeout, trust_env=False, headers=headers) as client:
            models = client.get(f"{base_url.rstrip('/')}/models")
            models.raise_for_status()
            props = client.get(f"{server_root(base_url)}/props")
            props_payload = props.json() if props.status_code == 200 else None
            return limits_from(models.json(), props_payload)
    except (httpx.HTTPError, ValueError) as exc:
        raise LimitsUnavailable(str(exc) or type(exc).__name__) from exc
