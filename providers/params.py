"""Sampling parameters: what a conversation (or a model's defaults) may set, how each value is
checked, and how the set values become the request's parameters.

Plain data and pure functions, no Django: the admin (a model's default parameters), the
conversation settings form and the send path all check values here, so one rule has one wording.
A parameter that was not set is absent from the dict, never None; only set parameters are sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "ACCEPTABLE_PARAMS",
    "JSON_MODE",
    "MAX_STOP_SEQUENCES",
    "MAX_TOKENS_KEYS",
    "PARAMS",
    "PARAM_BY_NAME",
    "STANDARD_PARAMS",
    "ParamError",
    "ParamSpec",
    "clean_params",
    "request_params",
]

MAX_STOP_SEQUENCES = 4  # OpenAI's limit; the strictest of the providers we know
MAX_STOP_CHARS = 200
SEED_LIMIT = 2**63  # a signed 64-bit integer, as OpenAI documents
JSON_MODE = "json_mode"  # ours: becomes response_format {"type": "json_object"}
# OpenAI's reasoning models refuse max_tokens and want max_completion_tokens.
MAX_TOKENS_KEYS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    label: str
    kind: str  # "float" | "int" | "stop"
    help: str
    minimum: float | None = None
    maximum: float | None = None


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "temperature",
        "Temperature",
        "float",
        "Randomness, from 0 (focused, repeatable) to 2 (very varied).",
        0,
        2,
    ),
    ParamSpec(
        "top_p",
        "Top p",
        "float",
        "Nucleus sampling, from 0 to 1: only the likeliest tokens that add up to this share.",
        0,
        1,
    ),
    ParamSpec(
        "top_k",
        "Top k",
        "int",
        "Only the k likeliest tokens are considered (a whole number, at least 1).",
        1,
        None,
    ),
    ParamSpec(
        "max_tokens",
        "Max tokens",
        "int",
        "The longest reply, in tokens.",
        1,
        None,
    ),
    ParamSpec(
        "frequency_penalty",
        "Frequency penalty",
        "float",
        "From -2 to 2; above 0 discourages repeating the same words.",
        -2,
        2,
    ),
    ParamSpec(
        "presence_penalty",
        "Presence penalty",
        "float",
        "From -2 to 2; above 0 encourages new topics.",
        -2,
        2,
    ),
    ParamSpec(
        "stop",
        "Stop sequences",
        "stop",
        f"One per line, up to {MAX_STOP_SEQUENCES}: the reply ends before any of them.",
    ),
    ParamSpec(
        "seed",
        "Seed",
        "int",
        "A whole number; the same seed and settings give similar replies (best effort).",
        -SEED_LIMIT,
        SEED_LIMIT - 1,
    ),
)
PARAM_BY_NAME = {spec.name: spec for spec in PARAMS}

# What a model may be marked as accepting. max_tokens is not among them: it is always sent,
# because the history budget reserves exactly that much room for the reply.
ACCEPTABLE_PARAMS: tuple[str, ...] = tuple(s.name for s in PARAMS if s.name != "max_tokens")
# What OpenAI's own Chat Completions accepts (top_k is an extension of some servers).
STANDARD_PARAMS: tuple[str, ...] = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "seed",
)

# Keys this app writes itself; a model's default parameters may not set them.
RESERVED_KEYS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "response_format",
        "max_completion_tokens",
    }
)


class ParamError(ValueError):
    """Values that cannot be used; ``errors`` maps each parameter name to plain words."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__(" ".join(self.errors.values()))


def _range_words(spec: ParamSpec) -> str:
    low, high = spec.minimum, spec.maximum
    if spec.name == "seed":
        return "a whole number that fits in 64 bits"
    number = "a whole number" if spec.kind == "int" else "a number"
    if low is not None and high is not None:
        return f"{number} from {_fmt(low)} to {_fmt(high)}"
    if low is not None:
        return f"{number} of at least {_fmt(low)}"
    return number


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _clean_number(spec: ParamSpec, value: object) -> float | int:
    wrong = ValueError(f"{spec.label} must be {_range_words(spec)}.")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong
    if isinstance(value, float) and not math.isfinite(value):
        raise wrong
    if spec.kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise wrong
            value = int(value)
    else:
        value = float(value)
    if spec.minimum is not None and value < spec.minimum:
        raise wrong
    if spec.maximum is not None and value > spec.maximum:
        raise wrong
    return value


def _clean_stop(spec: ParamSpec, value: object) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{spec.label} must be text, one sequence per line.")
    sequences = [item for item in value if item != ""]
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise ValueError(
            f"{spec.label}: at most {MAX_STOP_SEQUENCES} are allowed; {len(sequences)} were given."
        )
    if any(len(item) > MAX_STOP_CHARS for item in sequences):
        raise ValueError(f"{spec.label}: each may be at most {MAX_STOP_CHARS} characters long.")
    return sequences


def clean_params(raw: Mapping[str, object], *, allow_extra: bool = False) -> dict[str, object]:
    """The parameters in ``raw`` (JSON values), checked; raises ParamError naming each problem.

    None and an empty stop list mean "not set" and are dropped. ``json_mode`` is a bool.
    With ``allow_extra`` (a model's defaults, entered by an admin) keys this app does not know
    are passed through unchanged for servers with their own parameters (min_p,
    repetition_penalty, reasoning_effort, ...), except the keys this app writes itself.
    """
    if not isinstance(raw, Mapping):
        raise ParamError({"": 'Parameters must be a JSON object, such as {"temperature": 0.7}.'})
    cleaned: dict[str, object] = {}
    errors: dict[str, str] = {}
    for key, value in raw.items():
        if value is None:
            continue
        spec = PARAM_BY_NAME.get(key)
        try:
            if spec is not None:
                if spec.kind == "stop":
                    sequences = _clean_stop(spec, value)
                    if sequences:
                        cleaned[key] = sequences
                else:
                    cleaned[key] = _clean_number(spec, value)
            elif key == JSON_MODE:
                if not isinstance(value, bool):
                    raise ValueError("JSON mode must be true or false.")
                if value:
                    cleaned[key] = True
            elif key in RESERVED_KEYS:
                raise ValueError(f"{key} is set by this app and cannot be given here.")
            elif allow_extra and isinstance(key, str) and key:
                cleaned[key] = value
            else:
                raise ValueError(f"{key} is not a parameter this app knows.")
        except ValueError as exc:
            errors[str(key)] = str(exc)
    if errors:
        raise ParamError(errors)
    return cleaned


def request_params(
    *,
    defaults: Mapping[str, object],
    chosen: Mapping[str, object],
    accepted: Iterable[str],
    json_mode_allowed: bool,
    max_tokens: int,
    max_tokens_key: str = "max_tokens",
) -> dict[str, object]:
    """The parameters to send: a model's defaults with the conversation's values over them.

    Only what was set is sent, and of the sampling parameters only those the model accepts
    (a conversation keeps what it set for a model that took more). ``max_tokens`` is the room
    the history budget reserved for the reply; it is always sent, under ``max_tokens_key``.
    """
    accepted = set(accepted)
    merged = {**defaults, **chosen}
    params: dict[str, object] = {}
    for key, value in merged.items():
        if value is None or key == "max_tokens":
            continue
        if key == JSON_MODE:
            if value is True and json_mode_allowed:
                params["response_format"] = {"type": "json_object"}
        elif key in PARAM_BY_NAME:
            if key in accepted:
                params[key] = value
        elif key not in RESERVED_KEYS:
            params[key] = value  # an admin's extra default for this server
    key = max_tokens_key if max_tokens_key in MAX_TOKENS_KEYS else "max_tokens"
    params[key] = max_tokens
    return params
