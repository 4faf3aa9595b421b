"""The in-process caller ledger stays bounded and keeps time right (#31): token buckets and leases on the monotonic
clock, quota periods on the wall clock, and idle identities forgotten with constant work per request, however many
anonymous addresses come and go."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from chatsse.callers import Caller, CallerConfig
from chatsse.callers.ledger import Spend
from chatsse.callers.memory import MemoryLedger


class Clocks:
    def __init__(self) -> None:
        self.wall = 1_767_225_600.0  # 2026-01-01T00:00:00Z
        self.mono = 1000.0


def ledger() -> tuple[MemoryLedger, Clocks]:
    clocks = Clocks()
    return MemoryLedger(clock=lambda: clocks.wall, ticks=lambda: clocks.mono), clocks


ANONYMOUS = CallerConfig(name="anonymous", requests_per_minute=30, token_quota=1000, quota_period="hour")


@pytest.mark.timeout(180)
def test_a_million_addresses_leave_the_ledger_bounded_and_admission_time_flat() -> None:
    """1,000,000 distinct addresses, one request each, 1 ms apart on the monotonic clock and 36 ms on the wall clock
    (ten UTC hours in all), as through a trusted proxy: what is kept is what the last minute (buckets) and the
    current hour (quotas) hold, not everything ever seen; the process's memory stops growing once that is reached,
    and an admission costs as much at the end as at the start (a scan of every bucket would not)."""
    memory, clocks = ledger()
    seconds_per_100k: list[float] = []
    rss_mb: list[float] = []

    async def run() -> int:
        most = 0
        for n in range(1_000_000):
            if n % 100_000 == 0:
                seconds_per_100k.append(time.perf_counter())
                rss_mb.append(_rss_mb())
            caller = Caller(f"ip:10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", config=ANONYMOUS)
            standing = await memory.admit(caller, "r")
            assert standing.admitted
            await memory.charge(caller, "r", Spend(prompt=3))
            clocks.mono += 0.001
            clocks.wall += 0.036  # a quota hour is 100,000 requests
            most = max(most, len(memory.buckets))
        seconds_per_100k.append(time.perf_counter())
        rss_mb.append(_rss_mb())
        return most

    most = asyncio.run(run())
    # A bucket is kept for the minute it takes to refill: 60,000 requests at 1 ms, and a few more before the
    # constant-work sweep catches up.
    assert most <= 60_000 + 100 and len(memory.buckets) <= 60_100
    assert len(memory.open) == 0  # no limit on open replies here: nothing kept
    assert len(memory.quotas) <= 100_000 + 100  # the current hour's callers only
    laps = [b - a for a, b in zip(seconds_per_100k, seconds_per_100k[1:], strict=False)]
    assert max(laps[2:]) < 3 * min(laps[:2]) + 1, laps  # flat: a safety net, not a benchmark
    assert rss_mb[-1] - rss_mb[2] < 40, rss_mb  # steady once the minute and the hour are full (200,000 in)


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_buckets_run_on_the_monotonic_clock() -> None:
    memory, clocks = ledger()
    caller = Caller("key:a", config=CallerConfig(name="a", requests_per_minute=2))

    async def admitted() -> bool:
        return (await memory.admit(caller, "r")).admitted

    async def run() -> None:
        assert await admitted() and await admitted() and not await admitted()
        clocks.wall += 3600  # the wall clock jumps (NTP, a VM resumed): the bucket does not refill
        assert not await admitted()
        clocks.wall -= 7200  # or back: it does not freeze either
        clocks.mono += 30  # half a minute of real time: one request's worth
        assert await admitted() and not await admitted()

    asyncio.run(run())


def test_a_bucket_in_debt_is_not_forgotten_until_it_has_refilled() -> None:
    memory, clocks = ledger()
    heavy = Caller("key:heavy", config=CallerConfig(name="heavy", tokens_per_minute=100))

    async def run() -> None:
        assert (await memory.admit(heavy, "r")).admitted
        await memory.charge(heavy, "r", Spend(prompt=1000))  # ten minutes' worth over its limit
        for n in range(50):  # two minutes of other callers, each sweeping the oldest entries
            clocks.mono += 2.4
            other = Caller(f"ip:{n}", config=ANONYMOUS)
            await memory.admit(other, "x")
        assert not (await memory.admit(heavy, "s")).admitted  # still in debt: still known
        clocks.mono += 60 * 10
        assert (await memory.admit(heavy, "s")).admitted

    asyncio.run(run())


def test_quota_periods_follow_the_wall_clock() -> None:
    memory, clocks = ledger()
    caller = Caller("key:q", config=CallerConfig(name="q", token_quota=10, quota_period="hour"))

    async def run() -> None:
        assert (await memory.admit(caller, "r")).admitted
        await memory.charge(caller, "r", Spend(prompt=10))
        assert not (await memory.admit(caller, "s")).admitted
        clocks.mono += 7200  # monotonic time says nothing about calendar hours
        assert not (await memory.admit(caller, "s")).admitted
        clocks.wall += 3600  # the next UTC hour
        assert (await memory.admit(caller, "s")).admitted

    asyncio.run(run())
