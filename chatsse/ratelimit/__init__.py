"""The per-caller rate limit (CHATSSE_RATE_LIMIT): one interface, a backend per place the counts are kept.

base.py     RateLimiter: the interface the access middleware calls
memory.py   MemoryRateLimiter: token buckets in this process
redis.py    RedisRateLimiter: the same buckets on Redis, shared by every worker and instance (imported only
            with CHATSSE_REDIS_URL)
"""

from chatsse.ratelimit.base import RateLimiter
from chatsse.ratelimit.memory import MemoryRateLimiter

__all__ = ["MemoryRateLimiter", "RateLimiter"]
