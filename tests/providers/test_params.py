"""Sampling parameters: checking values, and which of them reach the request."""

from __future__ import annotations

import pytest

from providers.params import (
    ACCEPTABLE_PARAMS,
    STANDARD_PARAMS,
    ParamError,
    clean_params,
    request_params,
)


def errors_of(raw: dict, **options: bool) -> dict[str, str]:
    with pytest.raises(ParamError) as caught:
        clean_params(raw, **options)
    return caught.value.errors


def test_valid_values_are_kept_and_typed() -> None:
    cleaned = clean_params(
        {
            "temperature": 1,
            "top_p": 0.5,
            "top_k": 40.0,
            "max_tokens": 256,
            "frequency_penalty": -2,
            "presence_penalty": 2,
            "stop": ["END", "", "###"],
            "seed": -42,
            "json_mode": True,
        }
    )
    assert cleaned == {
        "temperature": 1.0,
        "top_p": 0.5,
        "top_k": 40,
        "max_tokens": 256,
        "frequency_penalty": -2.0,
        "presence_penalty": 2.0,
        "stop": ["END", "###"],
        "seed": -42,
        "json_mode": True,
    }
    assert isinstance(cleaned["top_k"], int) and isinstance(cleaned["temperature"], float)


def test_unset_values_are_dropped() -> None:
    assert clean_params({"temperature": None, "stop": [], "json_mode": False}) == {}


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"temperature": 2.5}, "temperature", "Temperature must be a number from 0 to 2."),
        ({"temperature": "hot"}, "temperature", "Temperature must be a number from 0 to 2."),
        ({"temperature": True}, "temperature", "Temperature must be a number from 0 to 2."),
        ({"temperature": float("nan")}, "temperature", "Temperature must be a number"),
        ({"top_p": 1.01}, "top_p", "Top p must be a number from 0 to 1."),
        ({"top_k": 0}, "top_k", "Top k must be a whole number of at least 1."),
        ({"top_k": 2.5}, "top_k", "Top k must be a whole number of at least 1."),
        ({"max_tokens": 0}, "max_tokens", "Max tokens must be a whole number of at least 1."),
        ({"frequency_penalty": -3}, "frequency_penalty", "from -2 to 2"),
        ({"presence_penalty": 2.1}, "presence_penalty", "from -2 to 2"),
        ({"seed": 2**63}, "seed", "Seed must be a whole number that fits in 64 bits."),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 are allowed; 5 were given"),
        ({"stop": [1, 2]}, "stop", "must be text"),
        ({"stop": ["x" * 201]}, "stop", "at most 200 characters"),
        ({"json_mode": "yes"}, "json_mode", "JSON mode must be true or false."),
        ({"temprature": 1}, "temprature", "temprature is not a parameter this app knows."),
    ],
)
def test_bad_values_are_named_in_plain_words(raw: dict, field: str, words: str) -> None:
    assert words in errors_of(raw)[field]


def test_every_problem_is_reported_at_once() -> None:
    assert set(errors_of({"temperature": 9, "top_p": 9, "top_k": -1})) == {
        "temperature",
        "top_p",
        "top_k",
    }


def test_a_single_stop_string_becomes_a_list() -> None:
    assert clean_params({"stop": "END"}) == {"stop": ["END"]}


def test_extra_keys_pass_only_when_allowed_and_never_reserved_ones() -> None:
    assert clean_params({"min_p": 0.05, "temperature": 0.3}, allow_extra=True) == {
        "min_p": 0.05,
        "temperature": 0.3,
    }
    for reserved in ("stream", "messages", "model", "response_format", "stream_options", "n"):
        assert "set by this app" in errors_of({reserved: 1}, allow_extra=True)[reserved]


def test_not_an_object() -> None:
    assert "JSON object" in errors_of([1, 2])[""]  # type: ignore[arg-type]


def test_request_params_sends_only_what_was_set_and_accepted() -> None:
    params = request_params(
        defaults={"temperature": 0.7, "top_p": 0.9, "min_p": 0.05},
        chosen={"temperature": 0.2, "top_k": 40, "stop": ["END"], "json_mode": True},
        accepted=["temperature", "top_p", "stop"],
        json_mode_allowed=True,
        max_tokens=300,
    )
    assert params == {
        "temperature": 0.2,  # the conversation's value over the model's default
        "top_p": 0.9,  # the model's default where the conversation set nothing
        "min_p": 0.05,  # an admin's extra default passes through
        "stop": ["END"],
        "response_format": {"type": "json_object"},
        "max_tokens": 300,
    }  # top_k: not accepted by this model, so not sent


def test_request_params_json_mode_needs_the_model() -> None:
    params = request_params(
        defaults={},
        chosen={"json_mode": True},
        accepted=ACCEPTABLE_PARAMS,
        json_mode_allowed=False,
        max_tokens=10,
    )
    assert params == {"max_tokens": 10}


def test_request_params_max_tokens_is_the_reserve_under_the_models_key() -> None:
    params = request_params(
        defaults={"max_tokens": 999},
        chosen={"max_tokens": 5000},
        accepted=STANDARD_PARAMS,
        json_mode_allowed=False,
        max_tokens=128,
        max_tokens_key="max_completion_tokens",
    )
    assert params == {"max_completion_tokens": 128}
