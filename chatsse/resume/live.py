"""One reply kept in this process: its events numbered 1, 2, 3..., followed by any number of clients."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import NamedTuple

from chatsse.errors import ResumeGap
from chatsse.events import ENDINGS, Batch, Event, Failed
from chatsse.sse import encode_json

# What framing adds to an event's payload on the wire ("id: <32 hex>.<seq>\ndata: ...\n\n"), counted in the bytes
# kept, so CHATSSE_RESUME_MAX_BYTES bounds about what a client would be sent.
FRAMING_BYTES = 48


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


def may_follow(owner: str | None, asker: str | None) -> bool:
    """Who may follow a kept reply: the caller that started it (with caller keys off, both are None: anyone with
    its id). The one rule for replies kept here and on Redis."""
    return (owner or "") == (asker or "")


class Followed(NamedTuple):
    """A kept reply a client follows: its events after the client's last, and the request that started it (its
    trace's "<trace id>-<span id>", which the follower's trace links to)."""

    events: AsyncIterator[Batch]
    origin: str | None


class LiveStream:
    """The events of one reply; the oldest are dropped beyond `max_bytes` of their encoding (a late resume then gets
    `resume_gap`). `follow()` yields everything after a given sequence, then the rest as it arrives."""

    def __init__(self, stream_id: str, owner: str | None, max_bytes: int) -> None:
        self.id = stream_id
        self.owner = owner  # the caller key that started it, when caller keys are on
        self.max_bytes = max_bytes
        self.ended = False
        self.finished = False  # its last event (done or an error) is in
        self.followers = 0
        self.upstream = ""
        self.origin: str | None = None  # the trace of the request that started it, for its followers' links
        self._events: list[Event] = []
        self._sizes: list[int] = []
        self._first_seq = 1
        self._size = 0
        self._changed = asyncio.Event()

    @property
    def first_seq(self) -> int:
        return self._first_seq

    def append(self, events: list[Event]) -> tuple[int, list[bytes]]:
        """Add `events`; returns the sequence of the first of them and each one's payload, encoded."""
        seq = self._first_seq + len(self._events)
        encoded = [encode_json(event.payload()) for event in events]
        self._events += events
        if events and isinstance(events[-1], ENDINGS):
            self.finished = True
        for payload in encoded:
            self._sizes.append(len(payload) + FRAMING_BYTES)
            self._size += len(payload) + FRAMING_BYTES
        if self._size > self.max_bytes:
            self._trim()
        self._wake()
        return seq, encoded

    def end(self) -> None:
        self.ended = True
        self._wake()

    def gap(self, after: int) -> bool:
        """True when events after `after` were already dropped."""
        return after + 1 < self._first_seq

    async def follow(self, after: int) -> AsyncIterator[Batch]:
        """Every event after sequence `after`, as they come, to the reply's end."""
        seq = after
        while True:
            changed = self._changed
            start = seq + 1 - self._first_seq
            if start < 0:  # this follower fell further behind than the kept events reach
                yield Batch([Failed.of(ResumeGap())])
                return
            if start < len(self._events):
                batch = Batch(self._events[start:], seq + 1)
                seq += len(batch.events)
                yield batch
                continue
            if self.ended:
                return
            await changed.wait()

    def _trim(self) -> None:
        drop, size = 0, self._size
        while size > self.max_bytes and drop < len(self._events) - 1:
            size -= self._sizes[drop]
            drop += 1
        del self._events[:drop]
        del self._sizes[:drop]
        self._first_seq += drop
        self._size = size

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
