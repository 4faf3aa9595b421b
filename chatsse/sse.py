"""Server-Sent Events without I/O: an incremental decoder (bytes in, events out) and the one event encoder.

The decoder follows WHATWG HTML "Interpreting an event stream": lines end in CRLF, LF or a lone CR;
only those split lines (not U+2028 and friends, as `str.splitlines` would); a line or a UTF-8
character may be split across reads anywhere; one leading BOM is dropped; a partial event at EOF
is discarded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Feed it bytes as they arrive with `decode()`; it returns the events completed so far."""

    def __init__(self) -> None:
        self._buffer = b""  # bytes of an unfinished line; never holds a CR
        self._pending_cr = False  # the last chunk ended in CR: a leading LF in the next one belongs to it
        self._at_start = True  # a BOM may still come
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None

    def decode(self, chunk: bytes) -> list[ServerSentEvent]:
        if not chunk:
            return []
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buffer = self._buffer + chunk
        if self._at_start:
            if len(buffer) < 3 and _BOM.startswith(buffer):
                self._buffer = buffer
                return []
            self._at_start = False
            if buffer.startswith(_BOM):
                buffer = buffer[3:]
        if b"\r" in buffer:
            self._pending_cr = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        events: list[ServerSentEvent] = []
        for line in lines:
            if line.startswith(b"data: "):  # the common case, first
                self._data.append(line[6:].decode("utf-8", "replace"))
            elif not line:
                self._dispatch(events)
            else:
                self._field(line.decode("utf-8", "replace"))
        return events

    @property
    def has_partial_event(self) -> bool:
        """True when bytes of an event that was never finished are held (they are discarded at EOF)."""
        return bool(self._buffer or self._data)

    def _dispatch(self, events: list[ServerSentEvent]) -> None:
        if self._data:
            events.append(ServerSentEvent("\n".join(self._data), self._event or "message", self._last_id, self._retry))
            self._data = []
        self._event = ""

    def _field(self, line: str) -> None:
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)


# The end-of-stream sentinel of OpenAI's chat completions, which the AI SDK's UI message stream reuses.
DATA_DONE = b"data: [DONE]\n\n"


def encode_json(payload: Any) -> bytes:
    """Compact JSON; a lone surrogate (which orjson refuses) becomes a \\u escape instead, still valid JSON."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        return json.dumps(payload, separators=(",", ":")).encode()


def encode_json_event(payload: Any, event_id: bytes = b"") -> bytes:
    """One event: an `id:` line if given, and one `data:` line of compact JSON. JSON escapes CR and LF, so the
    payload can never end the event early. Every event chatsse writes is framed here."""
    if event_id:
        return b"id: " + event_id + b"\ndata: " + encode_json(payload) + b"\n\n"
    return b"data: " + encode_json(payload) + b"\n\n"
