"""The per-caller rate limit: a token bucket in this process, or on Redis so it holds across workers and instances."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger("chatsse")

MAX_TRACKED_CALLERS = 10_000

# One bucket per caller in a hash (tokens, updated in ms), refilled continuously; Redis's own clock, so every
# worker agrees. Returns 0 when a token was taken, else the milliseconds until the next one.
_BUCKET = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local capacity, per_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens, updated = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, updated = capacity, now_ms end
tokens = math.min(capacity, tokens + (now_ms - updated) * per_ms)
local wait = 0
if tokens < 1 then wait = math.ceil((1 - tokens) / per_ms) else tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', now_ms)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 1000)
return wait
"""


class RateLimiter:
    """A token bucket per caller: `limit` requests per `period` seconds, refilled continuously."""

    def __init__(self, limit: int, period: float) -> None:
        self.capacity = float(limit)
        self.rate = limit / period
        self.buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, updated)
        self.on_failure: Callable[[], None] = lambda: None  # checks that could not be made (Redis only)

    async def retry_after(self, caller: str) -> float | None:
        """Take one token for `caller`; None if allowed, else seconds until the next one."""
        return self.take(caller, time.monotonic())

    def take(self, caller: str, now: float) -> float | None:
        tokens, updated = self.buckets.get(caller, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self.rate)
        if tokens < 1:
            self.buckets[caller] = (tokens, now)
            return (1 - tokens) / self.rate
        self.buckets[caller] = (tokens - 1, now)
        if len(self.buckets) > MAX_TRACKED_CALLERS:
            self._forget_full_buckets(now)
        return None

    def _forget_full_buckets(self, now: float) -> None:
        # A bucket that has refilled completely holds no information.
        full = [c for c, (t, u) in self.buckets.items() if t + (now - u) * self.rate >= self.capacity]
        for caller in full:
            del self.buckets[caller]


class RedisRateLimiter(RateLimiter):
    """The same bucket kept on Redis. If Redis is unreachable the limit fails open (one warning, then counted)."""

    def __init__(self, limit: int, period: float, client: redis.Redis) -> None:
        super().__init__(limit, period)
        self.script = client.register_script(_BUCKET)
        self.healthy = True

    async def retry_after(self, caller: str) -> float | None:
        try:
            wait_ms = await self.script(keys=[f"chatsse:rl:{caller}"], args=[self.capacity, self.rate / 1000])
        except (RedisError, OSError) as exc:
            self.on_failure()
            if self.healthy:
                log.warning("rate limit: Redis unreachable (%s); letting requests through", type(exc).__name__)
            self.healthy = False
            return None
        if not self.healthy:
            log.warning("rate limit: Redis is back")
        self.healthy = True
        return int(wait_ms) / 1000 if wait_ms else None
