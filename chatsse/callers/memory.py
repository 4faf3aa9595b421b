"""Callers' counters kept in this process (without CHATSSE_REDIS_URL): the rules of `ledger.py`, in Python.

Token buckets and open-reply leases run on the monotonic clock (a wall clock set back would refill or freeze
them); quota periods are UTC calendar periods, on the wall clock. Every map is ordered by last use, and each update
forgets at most a few of the oldest entries that no longer hold anything (a refilled bucket, no open reply, a quota
of a past period): constant work per request, and memory bounded by the identities seen in the last minute (and,
for quotas, the current period), however many anonymous addresses come and go.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from chatsse.callers.identity import Caller
from chatsse.callers.ledger import STREAM_LEASE_SECONDS, Level, Standing
from chatsse.callers.periods import period_bounds

REFILLED_AFTER_SECONDS = 60.0  # a bucket untouched this long is full again (unless in debt): it holds nothing
FORGET_PER_UPDATE = 2  # oldest entries looked at per update: more than one, so the maps shrink when traffic falls


class MemoryLedger:
    def __init__(self, clock: Callable[[], float] = time.time, ticks: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # wall time: which quota period it is
        self.ticks = ticks  # monotonic: buckets refill and leases end on it
        # "<identity> rpm|tpm" -> (level, when, when it is full again)
        self.buckets: OrderedDict[str, tuple[float, float, float]] = OrderedDict()
        # identity -> (its period's start and end, tokens used in it)
        self.quotas: OrderedDict[str, tuple[float, float, float]] = OrderedDict()
        self.open: OrderedDict[str, dict[str, float]] = OrderedDict()  # identity -> {reply id: lease end}

    async def admit(self, caller: Caller, reply_id: str) -> Standing:
        standing = self._standing(caller)
        config = caller.config
        if config is None:
            return standing
        if standing.admitted:
            if standing.requests is not None:
                self._set(caller, "rpm", standing.requests.remaining - 1, config.requests_per_minute or 1)
                standing.requests.remaining -= 1
            if config.max_streams:
                self.open.setdefault(caller.identity, {})[reply_id] = self.ticks() + STREAM_LEASE_SECONDS
                self.open.move_to_end(caller.identity)
                standing.open_streams += 1
        self._forget_idle()
        return standing

    async def charge(self, caller: Caller, reply_id: str, tokens: int) -> None:
        config = caller.config
        if config is None:
            return
        leases = self.open.get(caller.identity)
        if leases is not None:
            leases.pop(reply_id, None)
            if not leases:
                del self.open[caller.identity]
        if config.tokens_per_minute:
            level = self._level(caller, "tpm", config.tokens_per_minute, self.ticks())
            self._set(caller, "tpm", level - tokens, config.tokens_per_minute)
        if config.token_quota and config.quota_period:
            start, end = period_bounds(config.quota_period, self.clock())
            period, _, used = self.quotas.get(caller.identity, (start, end, 0.0))
            self.quotas[caller.identity] = (start, end, (used if period == start else 0.0) + tokens)
            self.quotas.move_to_end(caller.identity)
        self._forget_idle()

    async def standing(self, caller: Caller) -> Standing:
        return self._standing(caller)

    def _standing(self, caller: Caller) -> Standing:
        config = caller.config
        if config is None:
            return Standing(admitted=True)
        now, wall = self.ticks(), self.clock()
        standing = Standing(admitted=True)
        if config.requests_per_minute:
            standing.requests = self._bucket(caller, "rpm", config.requests_per_minute, now)
            standing.admitted &= standing.requests.remaining >= 1
        if config.tokens_per_minute:
            standing.tokens = self._bucket(caller, "tpm", config.tokens_per_minute, now)
            standing.admitted &= standing.tokens.remaining > 0
        if config.token_quota and config.quota_period:
            start, end = period_bounds(config.quota_period, wall)
            period, _, used = self.quotas.get(caller.identity, (start, end, 0.0))
            used = used if period == start else 0.0
            standing.quota = Level(config.token_quota, config.token_quota - used, end - wall)
            standing.admitted &= used < config.token_quota
        if config.max_streams:
            leases = self.open.get(caller.identity, {})
            for reply_id in [r for r, end in leases.items() if end <= now]:
                del leases[reply_id]
            standing.open_streams = len(leases)
            standing.admitted &= len(leases) < config.max_streams
        return standing

    def _bucket(self, caller: Caller, kind: str, limit: int, now: float) -> Level:
        level = self._level(caller, kind, limit, now)
        return Level(limit, level, (limit - level) / (limit / 60))

    def _level(self, caller: Caller, kind: str, limit: int, now: float) -> float:
        level, when, _ = self.buckets.get(f"{caller.identity} {kind}", (float(limit), now, now))
        return min(float(limit), level + (now - when) * limit / 60)

    def _set(self, caller: Caller, kind: str, level: float, limit: int) -> None:
        key, now = f"{caller.identity} {kind}", self.ticks()
        self.buckets[key] = (level, now, now + max(0.0, limit - level) / (limit / 60))
        self.buckets.move_to_end(key)

    def _forget_idle(self) -> None:
        """Forget a few of the least recently used entries that hold nothing any more (constant work)."""
        now = self.ticks()
        for _ in range(FORGET_PER_UPDATE):
            oldest = next(iter(self.buckets.items()), None)
            if oldest is None or now - oldest[1][1] < REFILLED_AFTER_SECONDS:
                break
            if oldest[1][2] <= now:
                del self.buckets[oldest[0]]  # full again: as if never seen
            else:
                self.buckets.move_to_end(oldest[0])  # still in debt (tokens over the limit): look again later
        for _ in range(FORGET_PER_UPDATE):
            identity = next(iter(self.open), None)
            if identity is None:
                break
            if any(end > now for end in self.open[identity].values()):
                self.open.move_to_end(identity)  # a reply still open: look again later
            else:
                del self.open[identity]  # every lease ended
        wall = self.clock()
        for _ in range(FORGET_PER_UPDATE):
            oldest_quota = next(iter(self.quotas.items()), None)
            if oldest_quota is None or oldest_quota[1][1] > wall:
                break
            del self.quotas[oldest_quota[0]]  # its period is over: the next one starts from nothing
