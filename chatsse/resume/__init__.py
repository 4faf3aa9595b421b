"""Resumable streams: a reply outlives its connection for `CHATSSE_RESUME_SECONDS`, and any client may follow it.

keeper.py   StreamKeeper: reads each reply into a LiveStream, counts followers, forgets replies when due
live.py     one reply kept in this process: its events numbered, followed by any number of clients
redis.py    the same replies copied to Redis Streams, with a lease on the process reading them (imported only
            with CHATSSE_REDIS_URL, as are the next three)
writer.py   their writes: one queue bounded in bytes, a pipeline per cycle, keys renewed, refusals counted
follow.py   following a kept reply on Redis from any worker or instance, and learning when its reader died
keys.py     where a kept reply lives on Redis: its keys under one hash tag, its reader's lease
"""

from chatsse.resume.keeper import StreamKeeper
from chatsse.resume.live import LiveStream, parse_event_id

__all__ = ["LiveStream", "StreamKeeper", "parse_event_id"]
