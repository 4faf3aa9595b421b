"""Choosing an upstream and resting it, as pure code: the clock is a number passed in, the randomness a seeded rng."""

from __future__ import annotations

import random
from collections import Counter

from chatsse.upstreams import UpstreamConfig
from chatsse.upstreams.cooldown import (
    CIRCUIT_BASE_SECONDS,
    CIRCUIT_MAX_SECONDS,
    CIRCUIT_MIN_FAILURES,
    DEFAULT_RATE_LIMIT_SECONDS,
    Cooldown,
)
from chatsse.upstreams.router import Router


def upstream(name: str, model: str = "default", priority: int = 0, weight: float = 1.0) -> UpstreamConfig:
    return UpstreamConfig(
        name=name, endpoint="http://127.0.0.1:9", deployment="d", model=model, priority=priority, weight=weight
    )


# --- Cooldown ------------------------------------------------------------------------------------------


def test_a_rate_limit_rests_exactly_as_long_as_asked() -> None:
    cooldown = Cooldown()
    cooldown.after_rate_limit(2.5, now=100.0)
    assert cooldown.cooling(102.49) and not cooldown.cooling(102.5)
    assert cooldown.rate_limited


def test_a_rate_limit_without_a_time_rests_the_default_and_never_shortens_a_rest() -> None:
    cooldown = Cooldown()
    cooldown.after_rate_limit(None, now=0.0)
    assert cooldown.until == DEFAULT_RATE_LIMIT_SECONDS
    cooldown.after_rate_limit(30.0, now=0.0)
    cooldown.after_rate_limit(0.1, now=1.0)  # a shorter answer later does not cut the longer rest
    assert cooldown.until == 30.0


def test_the_circuit_opens_only_on_enough_recent_failures() -> None:
    cooldown = Cooldown()
    for _ in range(CIRCUIT_MIN_FAILURES - 1):
        cooldown.after_failure(now=0.0)
    assert not cooldown.cooling(0.0)  # one or two failures say little
    cooldown.after_failure(now=0.0)
    assert cooldown.cooling(0.0) and not cooldown.cooling(CIRCUIT_BASE_SECONDS)
    assert not cooldown.rate_limited and len(cooldown.recent) == 0  # opening clears the evidence


def test_failures_among_mostly_successes_do_not_open_the_circuit() -> None:
    cooldown = Cooldown()
    for _ in range(7):
        cooldown.after_success()
    for _ in range(CIRCUIT_MIN_FAILURES):
        cooldown.after_failure(now=0.0)  # 3 of the last 10: not most of them
    assert not cooldown.cooling(0.0)


def test_each_reopening_before_a_success_rests_twice_as_long_up_to_the_cap() -> None:
    cooldown = Cooldown()
    rests = []
    now = 0.0
    for _ in range(8):
        for _ in range(CIRCUIT_MIN_FAILURES):
            cooldown.after_failure(now)
        rests.append(cooldown.until - now)
        now = cooldown.until
    assert rests[:3] == [CIRCUIT_BASE_SECONDS, 2 * CIRCUIT_BASE_SECONDS, 4 * CIRCUIT_BASE_SECONDS]
    assert max(rests) == CIRCUIT_MAX_SECONDS
    cooldown.after_success()
    for _ in range(CIRCUIT_MIN_FAILURES):
        cooldown.after_failure(now)
    assert cooldown.until - now == CIRCUIT_BASE_SECONDS  # a success starts the doubling over


# --- Router --------------------------------------------------------------------------------------------


def test_the_lowest_priority_tier_wins_while_one_of_it_is_ready() -> None:
    router = Router((upstream("ptu", priority=0), upstream("paygo", priority=1)), rng=random.Random(1))
    assert router.choose("default", now=0.0).name == "ptu"  # type: ignore[union-attr]
    router.cooldowns["ptu"].after_rate_limit(5.0, now=0.0)
    assert router.choose("default", now=1.0).name == "paygo"  # type: ignore[union-attr]
    assert router.choose("default", now=5.0).name == "ptu"  # type: ignore[union-attr]  # its rest is over
    assert router.resting(1.0) == ["ptu"] and router.resting(5.0) == []


def test_weights_share_a_tier_in_proportion() -> None:
    router = Router((upstream("a", weight=3), upstream("b", weight=1)), rng=random.Random(7))
    chosen = Counter(router.choose("default", now=0.0).name for _ in range(4000))  # type: ignore[union-attr]
    assert 0.72 < chosen["a"] / 4000 < 0.78


def test_excluded_and_resting_upstreams_are_skipped_and_groups_are_apart() -> None:
    router = Router((upstream("a"), upstream("b"), upstream("big", model="large")), rng=random.Random(3))
    assert {router.choose("default", 0.0, exclude={"a"}).name for _ in range(20)} == {"b"}  # type: ignore[union-attr]
    router.cooldowns["b"].after_rate_limit(1.0, now=0.0)
    assert router.choose("default", 0.0, exclude={"a"}) is None
    assert router.choose("large", 0.0).name == "big"  # type: ignore[union-attr]


def test_soonest_says_how_long_until_one_is_ready_and_whether_all_are_rate_limited() -> None:
    router = Router((upstream("a"), upstream("b")), rng=random.Random(0))
    assert router.soonest("default", now=0.0) == (0.0, False)
    router.cooldowns["a"].after_rate_limit(4.0, now=0.0)
    router.cooldowns["b"].after_rate_limit(2.0, now=0.0)
    assert router.soonest("default", now=0.5) == (1.5, True)
    for _ in range(CIRCUIT_MIN_FAILURES):
        router.cooldowns["b"].after_failure(now=0.5)  # b now rests after failures, not a rate limit
    wait, all_rate_limited = router.soonest("default", now=0.5)
    assert wait == 1.5 and not all_rate_limited
