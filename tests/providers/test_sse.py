from __future__ import annotations

import pytest

from providers.sse import SSEDecoder, SSEEvent


def decode(*parts: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for part in parts:
        events += decoder.feed(part)
    return events + decoder.close()


def datas(events: list[SSEEvent]) -> list[str]:
    return [event.data for event in events]


# A stream with every feature at once: multi-byte characters (2, 3 and 4 bytes), CRLF, CR and
# LF endings, comments, multi-line data, event/id/retry fields and a final event without the
# closing blank line.
SAMPLE = (
    b": keep-alive\n\n"
    b'data: {"t": "40\xc2\xb0C"}\n\n'
    b"event: note\r\nid: 7\r\nretry: 1500\r\ndata: first line\r\ndata: second \xe2\x82\xac\r\n\r\n"
    b"data: cr \xf0\x9f\x98\x80 only\r\r"
    b"data:\n\n"
    b":comment in between\n"
    b"data: [DONE]"
)


def test_sample_decodes_as_specified() -> None:
    events = decode(SAMPLE)
    assert events == [
        SSEEvent('{"t": "40°C"}'),
        SSEEvent("first line\nsecond €", event="note", id="7", retry=1500),
        SSEEvent("cr 😀 only", id="7"),  # the last event id persists
        SSEEvent("", id="7"),
        SSEEvent("[DONE]", id="7"),
    ]


def test_split_at_every_byte_offset_gives_the_same_events() -> None:
    expected = decode(SAMPLE)
    for offset in range(len(SAMPLE) + 1):
        assert decode(SAMPLE[:offset], SAMPLE[offset:]) == expected, offset


def test_split_at_every_pair_of_offsets_gives_the_same_events() -> None:
    expected = decode(SAMPLE)
    size = len(SAMPLE)
    for first in range(0, size + 1, 3):
        for second in range(first, size + 1, 5):
            parts = (SAMPLE[:first], SAMPLE[first:second], SAMPLE[second:])
            assert decode(*parts) == expected, (first, second)


def test_one_byte_at_a_time_gives_the_same_events() -> None:
    parts = [SAMPLE[i : i + 1] for i in range(len(SAMPLE))]
    assert decode(*parts) == decode(SAMPLE)


def test_split_inside_a_multibyte_character() -> None:
    degree = "°".encode()
    assert len(degree) == 2
    events = decode(b"data: 40" + degree[:1], degree[1:] + b"C\n\n")
    assert datas(events) == ["40°C"]


def test_crlf_split_between_cr_and_lf_is_one_line_ending() -> None:
    # Read as two line endings, "\r|\n" would end the event after "a" and split it in two.
    events = decode(b"data: a\r", b"\ndata: b\r\n\r\n")
    assert datas(events) == ["a\nb"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_each_line_ending(newline: bytes) -> None:
    body = b"data: one" + newline + newline + b"data: two" + newline + newline
    assert datas(decode(body)) == ["one", "two"]


def test_multiple_data_lines_are_joined_with_newlines() -> None:
    assert datas(decode(b"data: a\ndata: b\ndata:\ndata: c\n\n")) == ["a\nb\n\nc"]


def test_comments_and_keepalives_are_ignored() -> None:
    assert decode(b":\n\n: OPENROUTER PROCESSING\n\n:ping\n") == []


def test_blank_data_line_dispatches_an_empty_event() -> None:
    assert decode(b"data:\n\n") == [SSEEvent("")]
    assert decode(b"data\n\n") == [SSEEvent("")]  # a field name without a colon


def test_event_without_data_is_not_dispatched_and_resets_the_type() -> None:
    events = decode(b"event: ping\n\ndata: x\n\n")
    assert events == [SSEEvent("x")]


def test_only_one_leading_space_is_removed() -> None:
    assert datas(decode(b"data:x\n\ndata:  two\n\n")) == ["x", " two"]


def test_bom_is_stripped_only_at_the_start() -> None:
    bom = "\ufeff".encode()
    assert datas(decode(bom + b"data: a\n\n")) == ["a"]
    assert datas(decode(bom[:1], bom[1:] + b"data: a\n\n")) == ["a"]
    # Later, a BOM is an ordinary character and makes the line an unknown field.
    assert datas(decode(b"data: a\n\n" + bom + b"data: b\n\n")) == ["a"]


def test_final_event_without_blank_line_is_flushed_on_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]\n") == []
    assert decoder.close() == [SSEEvent("[DONE]")]


def test_final_line_without_newline_is_flushed_on_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a": 1}\n\ndata: [DONE]') == [SSEEvent('{"a": 1}')]
    assert decoder.close() == [SSEEvent("[DONE]")]


def test_id_with_nul_and_non_numeric_retry_are_ignored() -> None:
    events = decode(b"id: 1\n\nid: a\x00b\nretry: 10s\ndata: x\n\n")
    assert events == [SSEEvent("x", id="1", retry=None)]


def test_unknown_fields_are_ignored() -> None:
    assert decode(b"foo: bar\ndata: x\n\n") == [SSEEvent("x")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert datas(decode(b"data: a\xffb\n\n")) == ["a\ufffdb"]


def test_many_events_in_one_feed() -> None:
    body = b"".join(b"data: %d\n\n" % i for i in range(1000))
    assert datas(decode(body)) == [str(i) for i in range(1000)]
