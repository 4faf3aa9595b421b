"""The rate limit on Redis: the same token bucket, kept where every worker and instance counts against it."""

from __future__ import annotations

from collections.abc import Callable

from chatsse.redis import FAILURES, Client, Reachability

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


class RedisRateLimiter:
    """The token bucket of `memory.py`, kept on Redis. If Redis is unreachable the limit fails open (one warning,
    then counted)."""

    def __init__(self, limit: int, period: float, client: Client, on_failure: Callable[[], None]) -> None:
        self.capacity = limit
        self.rate_per_ms = limit / period / 1000
        self.script = client.register_script(_BUCKET)
        self.reachability = Reachability(
            "rate limit: Redis unreachable (%s); letting requests through", "rate limit: Redis is back", on_failure
        )

    async def retry_after(self, caller: str) -> float | None:
        try:
            wait_ms = await self.script(keys=[f"chatsse:rl:{caller}"], args=[self.capacity, self.rate_per_ms])
        except FAILURES as exc:
            self.reachability.failed(exc)
            return None
        self.reachability.answered()
        return int(wait_ms) / 1000 if wait_ms else None
