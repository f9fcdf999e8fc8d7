"""An incremental decoder for server-sent events (WHATWG HTML, "event stream interpretation").

Pure and synchronous: feed it bytes exactly as they come off the socket, split anywhere, and it
returns the complete events. It sits on the hot path of every streamed token, so the work is
done with str methods on whole chunks rather than a loop over bytes.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed bytes with feed(); call close() once at end of stream to flush what is left."""

    __slots__ = (
        "_data",
        "_decoder",
        "_event",
        "_last_id",
        "_partial",
        "_retry",
        "_skip_lf",
        "_started",
    )

    def __init__(self) -> None:
        # errors="replace": one bad byte from a provider must not kill the whole answer.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""  # the current line, not yet terminated
        self._skip_lf = False  # the last chunk ended in "\r": a leading "\n" belongs to it
        self._started = False  # whether the BOM check has been done
        self._data: list[str] = []
        self._event: str | None = None
        self._retry: int | None = None
        self._last_id: str | None = None  # per the spec the last event id persists

    def feed(self, data: bytes) -> list[SSEEvent]:
        return self._feed_text(self._decoder.decode(data))

    def close(self) -> list[SSEEvent]:
        """Flush at end of stream.

        The spec drops an event that is not followed by a blank line; many providers end the
        stream without it (Azure ends on "data: [DONE]" with no newline at all), so the
        pending line and the pending event are dispatched here instead.
        """
        events = self._feed_text(self._decoder.decode(b"", final=True))
        if self._partial:
            line, self._partial = self._partial, ""
            self._process_line(line, events)
        if self._data:
            events.append(self._dispatch())
        self._event = None
        self._retry = None
        return events

    def _feed_text(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not text:
            return events
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text[:1] == "\n":
                text = text[1:]
        if "\r" in text:
            # A trailing "\r" ends its line now; remember to drop the "\n" that may follow
            # in the next chunk so "\r|\n" is not read as two line endings.
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            self._partial += text
            return events
        lines = text.split("\n")
        if self._partial:
            lines[0] = self._partial + lines[0]
        self._partial = lines.pop()
        for line in lines:
            self._process_line(line, events)
        return events

    def _process_line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append(self._dispatch())
            else:
                # A blank line with no data dispatches nothing and resets the event type.
                self._event = None
                self._retry = None
            return
        if line[0] == ":":
            return  # comment / keep-alive
        # The common case first: "data: {...}".
        if line.startswith("data:"):
            value = line[5:]
            self._data.append(value[1:] if value[:1] == " " else value)
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":  # "data" with no colon: an empty data line
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        # Unknown field names are ignored, as the spec says.

    def _dispatch(self) -> SSEEvent:
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        event = SSEEvent(data, self._event, self._last_id, self._retry)
        self._data = []
        self._event = None
        self._retry = None
        return event
