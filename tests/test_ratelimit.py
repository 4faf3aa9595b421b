"""The rate limiter's token bucket in the process, without a server (through a server: test_access)."""

from __future__ import annotations

from chatsse.ratelimit.memory import MemoryRateLimiter as RateLimiter


def test_bucket_allows_the_limit_then_refills_continuously() -> None:
    limiter = RateLimiter(3, 60.0)  # 3 a minute: one token every 20 s
    assert [limiter.take("a", 0) for _ in range(3)] == [None, None, None]
    assert limiter.take("a", 0) == 20.0
    assert limiter.take("b", 0) is None  # callers are independent
    assert limiter.take("a", 19) is not None
    assert limiter.take("a", 40) is None  # refilled one token (and a bit) by then


def test_full_buckets_are_forgotten_when_many_callers_pass() -> None:
    limiter = RateLimiter(1, 1.0)
    for caller in range(10_001):
        limiter.take(f"ip:{caller}", 0)
    limiter.take("late", 100)  # everyone has refilled by now
    assert len(limiter.buckets) <= 2
