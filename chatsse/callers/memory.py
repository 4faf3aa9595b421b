"""Callers' counters kept in this process (without CHATSSE_REDIS_URL): the rules of `ledger.py`, in Python.

Token buckets and open-reply leases run on the monotonic clock (a wall clock set back would refill or freeze
them); quota periods are UTC calendar periods, on the wall clock. Every map is ordered by last use, and each update
forgets at most a few of the oldest entries that no longer hold anything (a refilled bucket, no open reply, a quota
of a past period): constant work per request, and memory bounded by the identities seen in the last minute (and,
for quotas and budgets, the current period), however many anonymous addresses come and go. The spend report's
counters are kept per caller (or team) and UTC day, for the last REPORT_DAYS days.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable

from chatsse.callers.identity import Caller
from chatsse.callers.ledger import NOTHING, STREAM_LEASE_SECONDS, Level, Spend, SpentHook, Standing, report_row
from chatsse.callers.periods import REPORT_DAYS, current_bounds

REFILLED_AFTER_SECONDS = 60.0  # a bucket untouched this long is full again (unless in debt): it holds nothing
FORGET_PER_UPDATE = 2  # oldest entries looked at per update: more than one, so the maps shrink when traffic falls


class MemoryLedger:
    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        ticks: Callable[[], float] = time.monotonic,
        on_spent: SpentHook = lambda who, before, after, start, end: None,
    ) -> None:
        self.clock = clock  # wall time: which quota period it is
        self.ticks = ticks  # monotonic: buckets refill and leases end on it
        self.on_spent = on_spent
        # "<identity> rpm|tpm" -> (level, when, when it is full again)
        self.buckets: OrderedDict[str, tuple[float, float, float]] = OrderedDict()
        # "<identity> tokens|cost" -> (its period's start and end, tokens or micro-units used in it)
        self.quotas: OrderedDict[str, tuple[float, float, float]] = OrderedDict()
        self.open: OrderedDict[str, dict[str, float]] = OrderedDict()  # identity -> {reply id: lease end}
        self.report: dict[tuple[str, float], Counter[str]] = {}  # (report row, day start) -> counters

    async def admit(self, caller: Caller, reply_id: str) -> Standing:
        standing = self._standing(caller)
        config = caller.config
        if config is None:
            return standing
        if caller.team is not None:
            standing.team = self._standing(caller.team)
            standing.admitted &= standing.team.admitted
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

    async def charge(self, caller: Caller, reply_id: str, spend: Spend = NOTHING) -> None:
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
            self._set(caller, "tpm", level - spend.tokens, config.tokens_per_minute)
        if spend != NOTHING:
            for who in (caller, caller.team) if caller.team is not None else (caller,):
                self._charge_period(who, spend)
                self._count(
                    who,
                    requests=1,
                    prompt=spend.prompt,
                    cached=spend.cached,
                    completion=spend.completion,
                    cost=spend.cost,
                )
        self._forget_idle()

    async def standing(self, caller: Caller) -> Standing:
        standing = self._standing(caller)
        if caller.team is not None:
            standing.team = self._standing(caller.team)
        return standing

    async def refused(self, caller: Caller, code: str) -> None:
        self._count(caller, **{f"refused:{code}": 1})

    async def days(self, rows: list[str], starts: list[float]) -> dict[str, dict[str, int]]:
        summed: dict[str, Counter[str]] = {row: Counter() for row in rows}
        for row in rows:
            for start in starts:
                summed[row].update(self.report.get((row, start), Counter()))
        return {row: dict(counters) for row, counters in summed.items()}

    def _charge_period(self, who: Caller, spend: Spend) -> None:
        """Add a reply to the quota and budget of a caller or team; a budget crossing a point tells `on_spent`."""
        config = who.config
        assert config is not None
        if config.token_quota and config.quota_period:
            self._add(f"{who.identity} tokens", config.quota_period, spend.tokens)
        if config.budget and config.budget_period and spend.cost:
            before, start, end = self._add(f"{who.identity} cost", config.budget_period, spend.cost)
            self.on_spent(who, int(before), int(before) + spend.cost, start, end)

    def _add(self, key: str, period: str, amount: int) -> tuple[float, float, float]:
        """Count `amount` in the current `period` under `key`: what was used before, and the period's bounds."""
        start, end = current_bounds(period, self.clock())
        began, _, used = self.quotas.get(key, (start, end, 0.0))
        before = used if began == start else 0.0
        self.quotas[key] = (start, end, before + amount)
        self.quotas.move_to_end(key)
        return before, start, end

    def _used(self, key: str, period: str, wall: float) -> tuple[float, float]:
        """Used in the current `period` under `key`, and the period's end."""
        start, end = current_bounds(period, wall)
        began, _, used = self.quotas.get(key, (start, end, 0.0))
        return (used if began == start else 0.0), end

    def _count(self, who: Caller, **amounts: int) -> None:
        day = current_bounds("day", self.clock())[0]
        key = (report_row(who), day)
        if key not in self.report:  # a new day: the oldest fall out of the report's reach
            for old in [k for k in self.report if k[1] < day - REPORT_DAYS * 86400]:
                del self.report[old]
        self.report.setdefault(key, Counter()).update(amounts)

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
            used, end = self._used(f"{caller.identity} tokens", config.quota_period, wall)
            standing.quota = Level(config.token_quota, config.token_quota - used, end - wall)
            standing.admitted &= used < config.token_quota
        if config.budget and config.budget_period:
            spent, end = self._used(f"{caller.identity} cost", config.budget_period, wall)
            standing.budget = Level(config.budget, config.budget - spent, end - wall)
            standing.admitted &= spent < config.budget
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
