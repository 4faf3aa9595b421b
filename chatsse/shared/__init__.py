"""State shared on Redis across workers and instances (CHATSSE_REDIS_URL): kept replies and the rate limit.

Imported only when CHATSSE_REDIS_URL is set, so a gateway without Redis never loads the client.
"""

from __future__ import annotations

import redis.asyncio as redis

from chatsse.shared.ratelimit import RedisRateLimiter
from chatsse.shared.streams import BLOCK_MS, RedisStreams

__all__ = ["RedisRateLimiter", "RedisStreams", "connect"]


def connect(url: str) -> redis.Redis:
    # Bounded waits everywhere: a lost Redis must make calls fail, never hang.
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=BLOCK_MS / 1000 + 3)
