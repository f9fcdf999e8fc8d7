"""Reading a model server's limits from what it reports (llama.cpp shapes and others)."""

from __future__ import annotations

import pytest

from providers.localmodel.limits import (
    LimitsUnavailable,
    ServerLimits,
    fetch_limits,
    limits_from,
    parse_models,
    parse_props,
    server_root,
)
from tests.livestack import free_port

MODELS = {"object": "list", "data": [{"id": "gemma-3-270m", "object": "model"}]}


def test_llama_cpp_props_give_the_context_and_reply_limit():
    props = {"default_generation_settings": {"n_ctx": 4096, "params": {"n_predict": 300}}}
    assert limits_from(MODELS, props) == ServerLimits("gemma-3-270m", 4096, 300)


def test_no_reply_limit_of_its_own_leaves_a_quarter_of_the_context_for_replies():
    props = {"default_generation_settings": {"n_ctx": 8192, "params": {"n_predict": -1}}}
    assert limits_from(MODELS, props) == ServerLimits("gemma-3-270m", 8192, 2048)


def test_a_context_length_in_the_model_list_is_used_without_props():
    vllm = {"data": [{"id": "m", "max_model_len": 32768}]}
    llama_cpp = {"data": [{"id": "m", "meta": {"n_ctx": 16384}}]}
    assert limits_from(vllm, None).context_window == 32768
    assert limits_from(llama_cpp, None).context_window == 16384


def test_a_server_that_does_not_say_its_context_gives_no_limits():
    with pytest.raises(LimitsUnavailable):
        limits_from(MODELS, {"total_slots": 1})
    with pytest.raises(LimitsUnavailable):
        limits_from({"data": []}, None)
    with pytest.raises(LimitsUnavailable):
        limits_from(["not", "a", "list"], None)


def test_odd_values_are_ignored():
    assert parse_props({"default_generation_settings": {"n_ctx": True, "params": "x"}}) == (
        None,
        None,
    )
    assert parse_props("nope") == (None, None)
    assert parse_models({"data": [{"id": 3}, "x", {"id": "ok", "context_length": -5}]}) == [
        ("ok", None)
    ]


def test_props_live_beside_v1():
    assert server_root("http://127.0.0.1:9000/v1/") == "http://127.0.0.1:9000"
    assert server_root("http://127.0.0.1:9000") == "http://127.0.0.1:9000"


def test_a_server_that_is_not_up_yet_raises_limits_unavailable():
    with pytest.raises(LimitsUnavailable):
        fetch_limits(f"http://127.0.0.1:{free_port()}/v1", "key", timeout=2)
