"""Where a kept reply lives on Redis (pure): its keys, all under one hash tag (one cluster slot), and its reader's
lease.

    chatsse:{s:<b>}:<id>:e          the events: entry 0-<seq>, field e, the event's payload() as JSON
    chatsse:{s:<b>}:<id>:m          owner, ended, reader
    chatsse:{s:<b>}:<id>:f          set by followers on other workers, so the reading worker keeps the reply
    chatsse:{s:<b>}:alive:<reader>  the lease of the process reading the replies of bucket <b>
    chatsse:c:<chat>                a useChat chat's stream

`<b>` is the first two hex digits of the stream id, which each process draws once for all the streams it reads.
"""

from __future__ import annotations

STOP_CHANNEL = "chatsse:{stop}"


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


def chat(chat_id: str) -> str:
    return f"chatsse:c:{chat_id}"
