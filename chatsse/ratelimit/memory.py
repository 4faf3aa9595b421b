"""The rate limit kept in this process: a token bucket per caller."""

from __future__ import annotations

import time

MAX_TRACKED_CALLERS = 10_000


class MemoryRateLimiter:
    """A token bucket per caller: `limit` requests per `period` seconds, refilled continuously."""

    def __init__(self, limit: int, period: float) -> None:
        self.capacity = float(limit)
        self.rate = limit / period
        self.buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, updated)

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
