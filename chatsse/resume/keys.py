"""Where a kept reply lives on Redis (pure): its keys, all under one hash tag (one cluster slot), and its reader's
lease.

    chatsse:{s:<b>}:<id>:e          the events: entry 0-<seq>, field e, the event's payload() as JSON
    chatsse:{s:<b>}:<id>:m          owner, ended, reader
    chatsse:{s:<b>}:<id>:f          set by followers on other workers, so the reading worker keeps the reply
    chatsse:{s:<b>}:alive:<reader>  the lease of the process reading the replies of bucket <b>
    chatsse:{s:<b>}:was:<reader>    that process ran lately and did not stop cleanly (an hour, renewed with its lease)
    chatsse:c:<chat>                a useChat chat's stream

A stream id is 32 hex digits: `<b>` (2), which each process draws once for all the streams it reads; the reader,
the process itself (8); the second the reply started, modulo 2**24 (6); and 64 random bits (16), so that it
cannot be guessed.
"""

from __future__ import annotations

STOP_CHANNEL = "chatsse:{stop}"
READER_HEX = 8  # hex digits of a reader's name, after the bucket's two in each stream id it reads
CLOCK = 2**24  # the start second in an id wraps after 194 days


def stream_id(bucket: str, reader: str, now: float, random_hex: str) -> str:
    return f"{bucket}{reader}{int(now) % CLOCK:06x}{random_hex}"


def reader_of(stream_id: str) -> str:
    """The process that reads a stream, as its id names it."""
    return stream_id[2 : 2 + READER_HEX]


def age_of(stream_id: str, now: float) -> float:
    """Seconds since the stream started, by its id and this clock (another machine's may differ a little)."""
    started = int(stream_id[2 + READER_HEX : 2 + READER_HEX + 6], 16)
    return (int(now) - started) % CLOCK


def tag(stream_id: str) -> str:
    """The prefix of every key of a stream: its hash tag is the bucket its id starts with."""
    return f"chatsse:{{s:{stream_id[:2]}}}:"


def events(stream_id: str) -> str:
    return f"{tag(stream_id)}{stream_id}:e"


def meta(stream_id: str) -> str:
    return f"{tag(stream_id)}{stream_id}:m"


def followed(stream_id: str) -> str:
    return f"{tag(stream_id)}{stream_id}:f"


def lease(bucket_or_stream: str, reader: str) -> str:
    """The lease of process `reader`, in the slot of its bucket (a stream id starts with it)."""
    return f"{tag(bucket_or_stream)}alive:{reader}"


def was(bucket_or_stream: str, reader: str) -> str:
    """Set while process `reader` runs, kept an hour after, deleted on its clean stop: a stream of its that has no
    trace on Redis was lost with it (it died before its first write), not never there."""
    return f"{tag(bucket_or_stream)}was:{reader}"


def chat(chat_id: str) -> str:
    return f"chatsse:c:{chat_id}"
