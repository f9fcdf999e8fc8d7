"""The launcher's additions to llama-cpp-python's server, checked without llama_cpp: the chat
format and the usage at the end of a stream, on a stand-in for llama_cpp.Llama with the same
call shape (create_chat_completion streams chunks while it iterates generate())."""

from __future__ import annotations

from providers.localmodel import server

END = 99  # the stand-in's end-of-generation token


class FakeLlama:
    """Produces the reply " Paris is big." as four tokens then END, like llama_cpp.Llama."""

    def __init__(self) -> None:
        self.max_tokens_seen: list[int | None] = []

    def generate(self, tokens, **kwargs):
        yield from [1, 2, 3, 4, END, 5]

    def create_chat_completion(self, messages, stream=False, max_tokens=None, **kwargs):
        self.max_tokens_seen.append(max_tokens)
        words = {1: " Paris", 2: " is", 3: " big", 4: "."}
        prompt = [7] * (10 + len(messages))

        def chunks():
            yield {
                "id": "c1",
                "created": 5,
                "model": "m",
                "choices": [{"delta": {"role": "assistant"}}],
            }
            for token in self.generate(prompt):
                if token == END:
                    break
                yield {
                    "id": "c1",
                    "created": 5,
                    "model": "m",
                    "choices": [{"delta": {"content": words[token]}}],
                }
            yield {
                "id": "c1",
                "created": 5,
                "model": "m",
                "choices": [{"delta": {}, "finish_reason": "stop"}],
            }

        if stream:
            return chunks()
        return {"choices": [{"message": {"content": "Paris is big."}}]}


def patched(reply_cap: int = 64) -> type[FakeLlama]:
    cls = type("PatchedLlama", (FakeLlama,), {})
    server._patch_llama(cls, lambda llama, token: token == END, reply_cap)
    return cls


def test_a_stream_ends_with_the_usage_of_the_tokens_evaluated_and_produced():
    llama = patched()()
    chunks = list(llama.create_chat_completion([{"role": "user", "content": "Hi"}], stream=True))

    assert chunks[-1] == {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
    }
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    # The transcript format leaves a space before the first word; it is not part of the reply.
    assert text == "Paris is big."
    assert llama._teamchat_counts is None  # nothing carried over to the next request


def test_a_reply_stopped_early_reports_no_usage_and_leaves_no_counts():
    llama = patched()()
    stream = llama.create_chat_completion([{"role": "user", "content": "Hi"}], stream=True)
    next(stream)
    next(stream)
    stream.close()  # the client went away
    assert llama._teamchat_counts is None


def test_an_abandoned_stream_finalized_late_does_not_clear_the_next_requests_counts():
    llama = patched()()
    abandoned = llama.create_chat_completion([{"role": "user", "content": "Hi"}], stream=True)
    next(abandoned)
    current = llama.create_chat_completion([{"role": "user", "content": "Hi"}], stream=True)
    abandoned.close()
    assert list(current)[-1]["usage"]["completion_tokens"] == 4


def test_replies_are_capped_at_the_servers_limit():
    llama = patched(reply_cap=64)()
    for asked in (None, 0, 500):
        list(llama.create_chat_completion([], stream=True, max_tokens=asked))
    llama.create_chat_completion([], stream=False, max_tokens=32)
    assert llama.max_tokens_seen == [64, 64, 64, 32]


def test_a_non_streamed_reply_is_left_as_it_is():
    llama = patched()()
    reply = llama.create_chat_completion([{"role": "user", "content": "Hi"}])
    assert reply == {"choices": [{"message": {"content": "Paris is big."}}]}


def test_the_transcript_format_a_base_model_continues():
    prompt, stop = server.format_transcript(
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "  Capital of France?  "},
            {"role": "assistant", "content": "Paris."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And of "},
                    {"type": "text", "text": "Spain?"},
                ],
            },
        ]
    )
    assert prompt == (
        "Answer briefly.\n\nUser: Capital of France?\nAssistant: Paris.\nUser: And of Spain?\nAssistant:"
    )
    assert stop == ["\nUser:", "\nAssistant:"]


def test_without_a_system_prompt_the_transcript_has_a_neutral_preamble():
    prompt, _ = server.format_transcript([{"role": "user", "content": "Hi"}])
    assert prompt == f"{server.PREAMBLE}\n\nUser: Hi\nAssistant:"


def test_the_server_listens_on_loopback_only():
    args = server.parse_args(["--model", "m.gguf", "--port", "8123"])
    assert server.HOST == "127.0.0.1"
    assert not hasattr(args, "host")
