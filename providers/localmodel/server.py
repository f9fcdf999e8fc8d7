"""The local model server: llama-cpp-python's OpenAI-compatible server, plus what the app needs.

Started by the supervisor as its own process::

    python -m providers.localmodel.server --model PATH --port N --n_ctx N --max_tokens N

with the API key in the TEAMCHAT_LOCAL_MODEL_API_KEY variable (not on the command line, which
every local user can read). It listens on 127.0.0.1 only; there is no option to change that.

The weights are a small *base* model and carry no chat template. Such a model continues a plain
transcript ("User: ... / Assistant:") with real sentences and stops at the next turn, where
Gemma's instruction markup makes it echo the prompt; so that is the chat format used here.

llama-cpp-python 0.3's server lacks three things the app relies on, so this launcher adds them
to it (in this process only):
- usage at the end of every stream, the chunk OpenAI sends for ``stream_options.include_usage``
  (which the app always asks for): counted from the prompt the model evaluated and the tokens
  it produced, the same counts the server reports for a non-streamed reply;
- ``GET /props`` in llama.cpp's shape, with the context the model was loaded with and the reply
  limit, so the app reads its limits from the server instead of assuming them;
- requests that queue instead of cutting off the reply in progress (a team shares one server).

The only module of the app that imports llama_cpp: the main install runs without it.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from typing import Any

from providers.localmodel import API_KEY_ENV, MODEL_ALIAS

HOST = "127.0.0.1"
CHAT_FORMAT = "teamchat-transcript"
PREAMBLE = "A conversation between a curious user and a helpful assistant."
_SPEAKERS = {"user": "User", "assistant": "Assistant"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="path of the GGUF file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n_ctx", type=int, default=8192, help="context window, in tokens")
    parser.add_argument("--max_tokens", type=int, default=512, help="longest reply, in tokens")
    parser.add_argument("--alias", default=MODEL_ALIAS, help="the model id clients ask for")
    return parser.parse_args(argv)


def _text(content: Any) -> str:
    """A message's text, whether a string or OpenAI's list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def format_transcript(messages: list[dict]) -> tuple[str, list[str]]:
    """(prompt, stop sequences) for a plain-transcript chat with a base model."""
    system = [_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    lines = ["\n\n".join(part for part in system if part) or PREAMBLE, ""]
    for message in messages:
        speaker = _SPEAKERS.get(message.get("role", ""))
        if speaker is not None:
            lines.append(f"{speaker}: {_text(message.get('content')).strip()}")
    lines.append("Assistant:")
    return "\n".join(lines), ["\nUser:", "\nAssistant:"]


def _register_chat_format() -> None:
    from llama_cpp.llama_chat_format import ChatFormatterResponse, register_chat_format

    @register_chat_format(CHAT_FORMAT)
    def transcript(messages: list[dict], **kwargs: Any) -> ChatFormatterResponse:
        prompt, stop = format_transcript(messages)
        return ChatFormatterResponse(prompt=prompt, stop=stop)


class _Counts:
    __slots__ = ("completion", "prompt")

    def __init__(self) -> None:
        self.prompt = 0
        self.completion = 0


def _patch_llama(llama_cls: Any, is_end_of_generation: Any, reply_cap: int) -> None:
    """Count tokens during streamed chat completions and end each stream with their usage."""
    original_generate = llama_cls.generate
    original_chat = llama_cls.create_chat_completion

    def generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
        counts: _Counts | None = getattr(self, "_teamchat_counts", None)
        if counts is not None:
            counts.prompt = len(tokens)
        for token in original_generate(self, tokens, *args, **kwargs):
            # The end-of-generation token is not part of the reply (nor of the server's own
            # non-streamed usage).
            if counts is not None and not is_end_of_generation(self, token):
                counts.completion += 1
            yield token

    def create_chat_completion(self: Any, *args: Any, **kwargs: Any) -> Any:
        requested = kwargs.get("max_tokens")
        if requested is None or requested <= 0 or requested > reply_cap:
            kwargs["max_tokens"] = reply_cap
        if not kwargs.get("stream"):
            return original_chat(self, *args, **kwargs)
        counts = _Counts()
        self._teamchat_counts = counts
        return _with_usage(self, original_chat(self, *args, **kwargs), counts)

    llama_cls.generate = generate
    llama_cls.create_chat_completion = create_chat_completion


def _with_usage(llama: Any, chunks: Iterator[dict], counts: _Counts) -> Iterator[dict]:
    last: dict = {}
    started = False
    try:
        for chunk in chunks:
            last = chunk
            if not started:
                # The transcript's "Assistant:" leaves the reply's first token with a space.
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        delta["content"] = delta["content"].lstrip()
                        started = bool(delta["content"])
            yield chunk
    finally:
        # The server runs one request at a time, but a stream it abandoned (the client went
        # away) may be finalized after the next one began: leave that one's counts alone.
        if getattr(llama, "_teamchat_counts", None) is counts:
            llama._teamchat_counts = None
    yield {
        "id": last.get("id", f"chatcmpl-{time.time_ns()}"),
        "object": "chat.completion.chunk",
        "created": last.get("created", int(time.time())),
        "model": last.get("model", ""),
        "choices": [],
        "usage": {
            "prompt_tokens": counts.prompt,
            "completion_tokens": counts.completion,
            "total_tokens": counts.prompt + counts.completion,
        },
    }


def _add_props(app: Any, reply_cap: int) -> None:
    from fastapi import Depends
    from llama_cpp.server.app import authenticate, get_llama_proxy

    @app.get("/props", dependencies=[Depends(authenticate)])
    async def props(llama_proxy: Any = Depends(get_llama_proxy)) -> dict:  # noqa: B008
        llama = llama_proxy(None)
        n_ctx_train = getattr(llama._model, "n_ctx_train", None)
        return {
            "default_generation_settings": {
                "n_ctx": llama.n_ctx(),
                "params": {"n_predict": reply_cap},
            },
            "n_ctx_train": n_ctx_train() if callable(n_ctx_train) else None,
            "model_path": llama.model_path,
            "total_slots": 1,
        }


def _scrub_environment(*setting_classes: Any) -> None:
    # llama-cpp-python's settings also read same-named environment variables (HOST, PORT,
    # MODEL, ...: case-insensitively). The run command's own HOST and PORT are for daphne.
    names = {name.lower() for cls in setting_classes for name in cls.model_fields}
    for variable in list(os.environ):
        if variable.lower() in names:
            del os.environ[variable]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    api_key = os.environ.pop(API_KEY_ENV, "") or None

    import llama_cpp
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    _scrub_environment(ModelSettings, ServerSettings)
    _register_chat_format()
    _patch_llama(
        llama_cpp.Llama,
        lambda llama, token: llama_cpp.llama_vocab_is_eog(llama._model.vocab, token),
        args.max_tokens,
    )
    server_settings = ServerSettings(
        host=HOST, port=args.port, api_key=api_key, interrupt_requests=False
    )
    model_settings = ModelSettings(
        model=args.model,
        model_alias=args.alias,
        n_ctx=args.n_ctx,
        chat_format=CHAT_FORMAT,
        verbose=False,
    )
    app = create_app(server_settings=server_settings, model_settings=[model_settings])
    _add_props(app, args.max_tokens)
    print(f"Local model server: {args.alias} on http://{HOST}:{args.port}", flush=True)
    uvicorn.run(app, host=HOST, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
