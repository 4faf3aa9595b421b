"""One reply kept in this process: its events numbered and framed with SSE ids, followed by any number of clients."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

from chatsse.errors import ResumeGap


def new_stream_id() -> str:
    """128 random bits: a stream id cannot be guessed, so it can be handed to whoever should follow the reply."""
    return secrets.token_hex(16)


def parse_event_id(event_id: str) -> tuple[str, int] | None:
    """`<stream id>.<sequence>` -> (stream id, sequence); None if it is not one of ours."""
    stream_id, dot, seq = event_id.strip().rpartition(".")
    if not dot or len(stream_id) != 32 or not seq.isdigit() or len(seq) > 12:
        return None
    try:
        int(stream_id, 16)
    except ValueError:
        return None
    return stream_id, int(seq)


class LiveStream:
    """The events of one reply, 1, 2, 3...; the oldest are dropped beyond `max_bytes` (a late resume then gets
    `resume_gap`). `follow()` yields everything after a given sequence, then the rest as it arrives."""

    def __init__(self, stream_id: str, owner: str | None, max_bytes: int) -> None:
        self.id = stream_id
        self.owner = owner  # the caller key that started it, when caller keys are on
        self.max_bytes = max_bytes
        self.ended = False
        self.followers = 0
        self.upstream = ""
        self._events: list[bytes] = []  # framed: "id: <stream>.<seq>\ndata: ...\n\n"
        self._first_seq = 1
        self._size = 0
        self._changed = asyncio.Event()

    @property
    def first_seq(self) -> int:
        return self._first_seq

    def append(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add the events in `data` (whole `data:` events, as the relay writes them); returns them numbered."""
        added = []
        prefix = b"id: " + self.id.encode() + b"."
        for event in data.split(b"\n\n")[:-1]:
            seq = self._first_seq + len(self._events)
            framed = b"%s%d\n%s\n\n" % (prefix, seq, event)
            self._events.append(framed)
            self._size += len(framed)
            added.append((seq, framed))
        if self._size > self.max_bytes:
            self._trim()
        self._wake()
        return added

    def end(self) -> None:
        self.ended = True
        self._wake()

    def gap(self, after: int) -> bool:
        """True when events after `after` were already dropped."""
        return after + 1 < self._first_seq

    async def follow(self, after: int, prefix: bytes = b"") -> AsyncIterator[bytes]:
        """Every event after sequence `after` (the first write led by `prefix`), as they come, to the reply's end."""
        seq = after
        while True:
            changed = self._changed
            start = seq + 1 - self._first_seq
            if start < 0:  # this follower fell further behind than the kept events reach
                yield ResumeGap().to_event()
                return
            if start < len(self._events):
                batch = self._events[start:]
                seq += len(batch)
                yield prefix + b"".join(batch)
                prefix = b""
                continue
            if self.ended:
                return
            await changed.wait()

    def _trim(self) -> None:
        drop, size = 0, self._size
        while size > self.max_bytes and drop < len(self._events) - 1:
            size -= len(self._events[drop])
            drop += 1
        del self._events[:drop]
        self._first_seq += drop
        self._size = size

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
