from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from providers.chunks import ChunkInterpreter, ThinkTagSplitter, parse_usage
from providers.events import (
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCalls,
    UpstreamError,
    Usage,
)


@dataclass
class Outcome:
    events: list[Event] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    @property
    def reasoning(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, ReasoningDelta))

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **top: Any) -> str:
    body: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "model": "m"}
    if delta is not None or finish is not None:
        body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    else:
        body["choices"] = []
    body.update(top)
    return json.dumps(body)


def run(*payloads: str, api_key: str = "", finish: bool = True) -> Outcome:
    interpreter = ChunkInterpreter(api_key=api_key)
    outcome = Outcome()
    for payload in payloads:
        outcome.events += interpreter.feed_payload(payload)
    if finish and not interpreter.failed:
        outcome.events += interpreter.finish()
    return outcome


def test_plain_stream_with_role_only_first_delta() -> None:
    out = run(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, finish="stop"),
        "[DONE]",
    )
    assert out.events == [TextDelta("Hel"), TextDelta("lo"), Finish("stop")]


def test_role_only_delta_with_null_content_emits_nothing() -> None:
    interpreter = ChunkInterpreter()
    assert interpreter.feed_payload(chunk({"role": "assistant", "content": None})) == []
    assert not interpreter.has_output


def test_done_is_recorded_and_later_payloads_are_ignored() -> None:
    interpreter = ChunkInterpreter()
    interpreter.feed_payload("[DONE]")
    assert interpreter.done
    assert interpreter.feed_payload(chunk({"content": "late"})) == []


def test_missing_finish_reason_means_stop() -> None:
    assert run(chunk({"content": "x"})).of(Finish) == [Finish("stop")]


@pytest.mark.parametrize("reason", ["length", "tool_calls", "content_filter", "something_new"])
def test_finish_reason_is_passed_through_raw(reason: str) -> None:
    assert run(chunk({"content": "x"}), chunk({}, finish=reason)).of(Finish) == [Finish(reason)]


def test_finish_reason_is_not_reset_by_later_chunks_without_delta() -> None:
    # Azure's asynchronous filter sends annotation chunks after the finish, with
    # finish_reason null and no delta at all.
    annotation = json.dumps(
        {"choices": [{"index": 0, "finish_reason": None, "content_filter_results": {}}]}
    )
    out = run(chunk({"content": "Kind"}), chunk({}, finish="content_filter"), annotation)
    assert out.text == "Kind"
    assert out.of(Finish) == [Finish("content_filter")]


def test_duplicate_finish_chunks_give_one_finish() -> None:
    out = run(chunk({"content": "Oi"}), chunk({"content": ""}, finish="stop"), chunk({}, "stop"))
    assert out.of(Finish) == [Finish("stop")]
    assert out.text == "Oi"


def test_stop_reason_beside_finish_reason() -> None:
    # ASI-1 sends both; finish_reason wins and stop_reason fills in when it is missing.
    with_both = json.dumps(
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length", "stop_reason": "stop"}]}
    )
    only_stop = json.dumps(
        {"choices": [{"index": 0, "delta": {}, "finish_reason": None, "stop_reason": "length"}]}
    )
    assert run(with_both).of(Finish) == [Finish("length")]
    assert run(only_stop).of(Finish) == [Finish("length")]


def test_vllm_stop_reason_with_a_stop_string_is_not_a_finish_reason() -> None:
    payload = json.dumps(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "x"},
                    "finish_reason": None,
                    "stop_reason": "\n\nUser:",
                }
            ]
        }
    )
    assert run(payload).of(Finish) == [Finish("stop")]


# -- usage ------------------------------------------------------------------------------


def test_usage_only_final_chunk_with_empty_choices() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    out = run(chunk({"content": "hi"}), chunk({}, "stop"), chunk(usage=usage), "[DONE]")
    assert out.events[-2:] == [Usage(5, 2, 7), Finish("stop")]


def test_running_usage_on_every_chunk_reports_the_last_snapshot_once() -> None:
    payloads = [
        chunk(
            {"content": f"t{i}"},
            usage={"prompt_tokens": 9, "completion_tokens": i, "total_tokens": 9 + i},
        )
        for i in range(1, 6)
    ]
    out = run(*payloads)
    assert out.of(Usage) == [Usage(9, 5, 14)]  # not 45 completion tokens


def test_repeated_usage_is_reported_once_never_summed() -> None:
    usage = {"prompt_tokens": 93, "completion_tokens": 32, "total_tokens": 125}
    out = run(
        chunk({}, "tool_calls", usage=usage, x_groq={"usage": usage}),
        chunk(usage=usage),
        "[DONE]",
    )
    assert out.of(Usage) == [Usage(93, 32, 125)]


def test_usage_under_x_groq_only() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert run(chunk({}, "stop", x_groq={"usage": usage})).of(Usage) == [Usage(1, 2, 3)]


def test_no_usage_means_no_usage_event() -> None:
    assert run(chunk({"content": "x"}, usage=None)).of(Usage) == []


def test_parse_usage_shapes() -> None:
    assert parse_usage(None) is None
    assert parse_usage({}) is None
    assert parse_usage({"input_tokens": 3, "output_tokens": 4}) == Usage(3, 4, None)
    assert parse_usage({"prompt_tokens": 3.0, "total_tokens": True}) == Usage(3, None, None)


# -- reasoning --------------------------------------------------------------------------


def test_reasoning_content_field() -> None:
    out = run(chunk({"reasoning_content": "think"}), chunk({"content": "answer"}))
    assert out.reasoning == "think"
    assert out.text == "answer"
    assert out.events[0] == ReasoningDelta("think")


def test_reasoning_field_is_taken_once_not_with_reasoning_details() -> None:
    delta = {
        "content": "",
        "reasoning": "First",
        "reasoning_details": [{"type": "reasoning.summary", "summary": "First"}],
    }
    assert run(chunk(delta)).reasoning == "First"


def test_reasoning_and_reasoning_content_with_the_same_text_count_once() -> None:
    assert run(chunk({"reasoning": "x", "reasoning_content": "x"})).reasoning == "x"


def test_asi1_top_level_thought() -> None:
    out = run(
        json.dumps({"thought": "Let me think.", "choices": []}),
        json.dumps({"thought": " Done."}),
        chunk({"content": "Answer"}, finish=None),
        json.dumps(
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "stop"}]}
        ),
    )
    assert out.reasoning == "Let me think. Done."
    assert out.text == "Answer"
    assert out.of(Finish) == [Finish("stop")]


THINK_STREAM = "<think>\nabc <b>d</b>\n</think>\n\nThe answer <think> stays."


@pytest.mark.parametrize("cut", range(len(THINK_STREAM) + 1))
def test_think_tags_split_anywhere(cut: int) -> None:
    out = run(chunk({"content": THINK_STREAM[:cut]}), chunk({"content": THINK_STREAM[cut:]}))
    assert out.reasoning == "abc <b>d</b>\n"
    assert out.text == "The answer <think> stays."


def test_think_tags_one_character_per_chunk() -> None:
    out = run(*(chunk({"content": char}) for char in THINK_STREAM))
    assert out.reasoning == "abc <b>d</b>\n"
    assert out.text == "The answer <think> stays."


def test_think_open_tag_split_as_th_ink() -> None:
    out = run(
        chunk({"content": "<th"}),
        chunk({"content": "ink>why</th"}),
        chunk({"content": "ink>"}),
        chunk({"content": "because"}),
    )
    assert out.reasoning == "why"
    assert out.text == "because"


def test_unclosed_think_block_is_reasoning_at_the_end() -> None:
    out = run(chunk({"content": "<think>still thinking</thi"}))
    assert out.reasoning == "still thinking</thi"
    assert out.text == ""


def test_text_that_only_looks_like_a_tag_is_kept() -> None:
    assert (
        run(chunk({"content": "<thi"}), chunk({"content": "s> is html"})).text == "<this> is html"
    )
    assert run(chunk({"content": "<th"})).text == "<th"


def test_leading_whitespace_is_kept_when_there_is_no_think_block() -> None:
    assert run(chunk({"content": "\n"}), chunk({"content": "Hi"})).text == "\nHi"


def test_splitter_passes_answer_text_through_unchanged() -> None:
    splitter = ThinkTagSplitter()
    assert splitter.feed("Hello") == [TextDelta("Hello")]
    assert splitter.feed("<think>") == [TextDelta("<think>")]
    assert splitter.flush() == []


# -- content shapes ---------------------------------------------------------------------


def test_content_as_list_of_typed_parts() -> None:
    parts = [
        {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
        {"type": "text", "text": "Hello"},
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": " world"},
    ]
    out = run(chunk({"content": parts}))
    assert out.text == "Hello world"
    assert out.reasoning == "hmm"


def test_refusal_is_shown_as_text() -> None:
    assert run(chunk({"content": None, "refusal": "I can't help with that."})).text == (
        "I can't help with that."
    )


# -- tool calls -------------------------------------------------------------------------


def test_tool_call_arguments_assembled_by_index() -> None:
    first = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": ""},
    }
    second = {
        "index": 1,
        "id": "call_2",
        "type": "function",
        "function": {"name": "time", "arguments": '{"tz"'},
    }
    out = run(
        chunk({"role": "assistant", "content": None, "tool_calls": [first]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"'}}]}),
        chunk({"tool_calls": [second]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'location":"Flo"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": ':"UTC"}'}}]}),
        chunk({}, finish="tool_calls"),
    )
    assert out.of(ToolCalls) == [
        ToolCalls(
            (
                ToolCall("call_1", "weather", '{"location":"Flo"}'),
                ToolCall("call_2", "time", '{"tz":"UTC"}'),
            )
        )
    ]
    assert out.events[-2:] == [out.of(ToolCalls)[0], Finish("tool_calls")]


def test_tool_call_in_one_chunk_with_index_after_function() -> None:
    call = {
        "id": "functions.weather:0",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"a":1}'},
        "index": 0,
    }
    out = run(
        chunk({"content": "Checking."}), chunk({"tool_calls": [call]}), chunk({}, "tool_calls")
    )
    assert out.of(ToolCalls)[0].calls == (ToolCall("functions.weather:0", "weather", '{"a":1}'),)


def test_tool_calls_without_index_are_told_apart_by_id() -> None:
    calls = [
        {"id": "a", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "function": {"name": "g", "arguments": "{"}},
    ]
    out = run(
        chunk({"tool_calls": calls}), chunk({"tool_calls": [{"function": {"arguments": "}"}}]})
    )
    assert out.of(ToolCalls)[0].calls == (ToolCall("a", "f", "{}"), ToolCall("b", "g", "{}"))


def test_order_of_closing_events() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    call = {"index": 0, "id": "x", "function": {"name": "f", "arguments": "{}"}}
    out = run(chunk({"tool_calls": [call]}), chunk({}, "tool_calls", usage=usage))
    kinds = [type(e) for e in out.events]
    assert kinds == [ToolCalls, Usage, Finish]


# -- errors -----------------------------------------------------------------------------


def test_error_object_in_a_data_line() -> None:
    out = run(
        chunk({"content": "The"}),
        json.dumps({"error": {"message": "The server had an error", "type": "server_error"}}),
        chunk({"content": " ignored"}),
    )
    assert out.text == "The"
    [error] = out.of(UpstreamError)
    assert error.kind == "stream_error"
    assert "The server had an error" in error.message
    assert "server_error" in error.message
    assert error.status == 200
    assert out.of(Finish) == []


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"message": "You exceeded your current quota", "type": "insufficient_quota"}, "budget"),
        ({"message": "Rate limit exceeded", "code": 429}, "rate_limit"),
        ({"message": "bad key", "code": "invalid_api_key"}, "auth"),
        ({"message": "Provider disconnected"}, "stream_error"),
        ("plain text error", "stream_error"),
    ],
)
def test_error_object_kinds(error: object, kind: str) -> None:
    [event] = run(json.dumps({"error": error})).events
    assert isinstance(event, UpstreamError)
    assert event.kind == kind


def test_error_message_never_contains_the_api_key() -> None:
    key = "sk-live-0123456789abcdef"
    payload = json.dumps({"error": {"message": f"Key {key} is not allowed"}})
    [event] = run(payload, api_key=key).events
    assert isinstance(event, UpstreamError)
    assert key not in event.message
    assert "[redacted]" in event.message


def test_unparseable_payload_is_a_protocol_error() -> None:
    [event] = run("{not json").events
    assert isinstance(event, UpstreamError)
    assert event.kind == "protocol"


def test_blank_payload_is_ignored() -> None:
    assert run("", "  ", chunk({"content": "x"})).text == "x"


# -- whole bodies -----------------------------------------------------------------------


def test_non_streaming_body() -> None:
    interpreter = ChunkInterpreter()
    body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "Call the tool.",
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"q":1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 139, "completion_tokens": 51, "total_tokens": 190},
    }
    events = interpreter.feed_body(body) + interpreter.finish()
    assert events == [
        ReasoningDelta("Call the tool."),
        ToolCalls((ToolCall("t1", "weather", '{"q":1}'),)),
        Usage(139, 51, 190),
        Finish("tool_calls"),
    ]


def test_non_streaming_body_with_think_tags() -> None:
    interpreter = ChunkInterpreter()
    body = {"choices": [{"message": {"content": "<think>hm</think>Yes"}, "finish_reason": "stop"}]}
    events = interpreter.feed_body(body)
    assert events == [ReasoningDelta("hm"), TextDelta("Yes")]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (
            {"error": {"message": "m", "type": "invalid_request_error", "code": "model_not_found"}},
            "not_found",
        ),
        ({"error": {"message": "Budget has been exceeded!"}}, "budget"),
        ({"error": {"message": "something odd"}}, "protocol"),
        ({"object": "list", "data": []}, "protocol"),
        (["not", "an", "object"], "protocol"),
    ],
)
def test_error_bodies_with_http_200(body: object, kind: str) -> None:
    [event] = ChunkInterpreter().feed_body(body)
    assert isinstance(event, UpstreamError)
    assert event.kind == kind
    assert event.status == 200


def test_full_message_inside_a_stream_chunk() -> None:
    payload = json.dumps(
        {"choices": [{"index": 0, "message": {"content": "Whole"}, "finish_reason": "stop"}]}
    )
    out = run(payload)
    assert out.text == "Whole"
    assert out.of(Finish) == [Finish("stop")]
