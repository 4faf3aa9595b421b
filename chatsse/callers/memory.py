"""Callers' counters kept in this process (without CHATSSE_REDIS_URL): the rules of `ledger.py`, in Python."""

from __future__ import annotations

import time
from collections.abc import Callable

from chatsse.callers.identity import Caller
from chatsse.callers.ledger import STREAM_LEASE_SECONDS, Level, Standing
from chatsse.callers.periods import period_bounds

MAX_TRACKED_BUCKETS = 10_000


class MemoryLedger:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # "<identity> rpm|tpm" -> (level, when)
        self.quotas: dict[str, float] = {}  # "<identity> <period start>" -> tokens used
        self.open: dict[str, dict[str, float]] = {}  # identity -> {reply id: lease end}

    async def admit(self, caller: Caller, reply_id: str) -> Standing:
        standing = self._standing(caller, self.clock())
        config = caller.config
        if config is None:
            return standing
        if standing.admitted:
            if standing.requests is not None:
                self._set(caller, "rpm", standing.requests.remaining - 1)
                standing.requests.remaining -= 1
            if config.max_streams:
                self.open.setdefault(caller.identity, {})[reply_id] = self.clock() + STREAM_LEASE_SECONDS
                standing.open_streams += 1
        return standing

    async def charge(self, caller: Caller, reply_id: str, tokens: int) -> None:
        config, now = caller.config, self.clock()
        if config is None:
            return
        self.open.get(caller.identity, {}).pop(reply_id, None)
        if config.tokens_per_minute:
            self._set(caller, "tpm", self._level(caller, "tpm", config.tokens_per_minute, now) - tokens)
        if config.token_quota and config.quota_period:
            start, _ = period_bounds(config.quota_period, now)
            key = f"{caller.identity} {start:.0f}"
            self.quotas[key] = self.quotas.get(key, 0) + tokens
            self._forget_old_quotas(caller.identity, key)

    async def standing(self, caller: Caller) -> Standing:
        return self._standing(caller, self.clock())

    def _standing(self, caller: Caller, now: float) -> Standing:
        config = caller.config
        if config is None:
            return Standing(admitted=True)
        standing = Standing(admitted=True)
        if config.requests_per_minute:
            standing.requests = self._bucket(caller, "rpm", config.requests_per_minute, now)
            standing.admitted &= standing.requests.remaining >= 1
        if config.tokens_per_minute:
            standing.tokens = self._bucket(caller, "tpm", config.tokens_per_minute, now)
            standing.admitted &= standing.tokens.remaining > 0
        if config.token_quota and config.quota_period:
            start, end = period_bounds(config.quota_period, now)
            used = self.quotas.get(f"{caller.identity} {start:.0f}", 0)
            standing.quota = Level(config.token_quota, config.token_quota - used, end - now)
            standing.admitted &= used < config.token_quota
        if config.max_streams:
            leases = self.open.setdefault(caller.identity, {})
            for reply_id in [r for r, end in leases.items() if end <= now]:
                del leases[reply_id]
            standing.open_streams = len(leases)
            standing.admitted &= len(leases) < config.max_streams
        return standing

    def _bucket(self, caller: Caller, kind: str, limit: int, now: float) -> Level:
        level = self._level(caller, kind, limit, now)
        return Level(limit, level, (limit - level) / (limit / 60))

    def _level(self, caller: Caller, kind: str, limit: int, now: float) -> float:
        level, when = self.buckets.get(f"{caller.identity} {kind}", (float(limit), now))
        return min(float(limit), level + (now - when) * limit / 60)

    def _set(self, caller: Caller, kind: str, level: float) -> None:
        self.buckets[f"{caller.identity} {kind}"] = (level, self.clock())
        if len(self.buckets) > MAX_TRACKED_BUCKETS:  # anonymous callers, one per client address
            now = self.clock()
            for key, (old, when) in list(self.buckets.items()):
                if now - when > 60 and old >= 0:  # refilled by now: it holds no information
                    del self.buckets[key]

    def _forget_old_quotas(self, identity: str, current: str) -> None:
        for key in [k for k in self.quotas if k.startswith(identity + " ") and k != current]:
            del self.quotas[key]
