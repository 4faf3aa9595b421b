"""Resumable streams: a reply outlives its connection for `CHATSSE_RESUME_SECONDS`, and any client may follow it.

keeper.py   StreamKeeper: reads each reply into a LiveStream, counts followers, forgets replies when due
live.py     one reply kept in this process: its events numbered, followed by any number of clients
redis.py    the same replies copied to Redis Streams, followed from any worker or instance (imported only
            with CHATSSE_REDIS_URL)
"""

from chatsse.resume.keeper import StreamKeeper
from chatsse.resume.live import LiveStream, parse_event_id

__all__ = ["LiveStream", "StreamKeeper", "parse_event_id"]
