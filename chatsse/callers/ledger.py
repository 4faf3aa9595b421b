"""A caller's limits as they stand, and what follows from them: admit or refuse (which error, when to come back),
OpenAI's x-ratelimit-* headers, and the body of `GET /api/v1/usage`. The counting itself is a backend's:
`memory.py` in this process, `redis.py` shared by every worker and instance.

Requests per minute and tokens per minute are token buckets that refill continuously (a minute's allowance at
most). A request needs one request left and a token balance above zero; its tokens are charged when its reply
ends, so one reply may overdraw the balance by its own size, as Azure API Management's token limit does. The
quota counts tokens per UTC calendar period and admits while any is left; a budget counts cost (micro-units of the
prices' currency) alike. A caller's team has its own quota and budget, which every member's request must also find
room in, and which every member's reply is charged to. Open replies are counted per caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from chatsse.callers.config import CallerConfig
from chatsse.callers.identity import Caller
from chatsse.errors import BudgetExceeded, CallerRateLimited, ChatSSEError, QuotaExceeded, RateLimited, TooManyStreams
from chatsse.prices import MICRO

RATE_HEADERS = [
    f"x-ratelimit-{what}-{kind}" for kind in ("tokens", "requests") for what in ("limit", "remaining", "reset")
]
# A caller's open replies are counted with a lease, so that replies of an instance that died stop counting.
STREAM_LEASE_SECONDS = 900.0


@dataclass
class Level:
    """One limit now: its size, what is left, and seconds until it is whole again (a quota: until it resets)."""

    limit: int
    remaining: float
    reset: float

    @property
    def rate(self) -> float:  # a bucket's refill per second
        return self.limit / 60


@dataclass
class Standing:
    """A caller's limits at one moment; `admitted` if this request was let in (and counted)."""

    admitted: bool
    requests: Level | None = None
    tokens: Level | None = None
    quota: Level | None = None
    budget: Level | None = None  # in micro-units
    open_streams: int = 0
    team: Standing | None = None  # its team's quota and budget


@dataclass(frozen=True)
class Spend:
    """What a reply used: its tokens by kind and its cost in micro-units (0 where no price is known)."""

    prompt: int = 0  # cached included
    cached: int = 0
    completion: int = 0  # reasoning included
    cost: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion


NOTHING = Spend()  # a reply that never opened: it only stops counting as open


class Ledger(Protocol):
    async def admit(self, caller: Caller, reply_id: str) -> Standing:
        """Check every limit (its team's too) and, if all allow it, count the request and its open reply."""
        ...

    async def charge(self, caller: Caller, reply_id: str, spend: Spend = NOTHING) -> None:
        """The reply ended: charge what it used to its caller and team; it no longer counts as open."""
        ...

    async def standing(self, caller: Caller) -> Standing:
        """The limits as they are, counting nothing."""
        ...

    async def refused(self, caller: Caller, code: str) -> None:
        """Count a refused request in the spend report."""
        ...

    async def days(self, rows: list[str], starts: list[float]) -> dict[str, dict[str, int]]:
        """The spend report's counters of each row (a caller's label, `team:<name>`), summed over the UTC days
        that start at `starts`."""
        ...


# A hook called after a charge with a budget: who (a caller or a team), its spend before and after the charge, and
# the start and end of its budget period. Alerts hang on it.
SpentHook = Callable[[Caller, int, int, float, float], None]


def report_row(who: Caller) -> str:
    """The spend report's row of a caller or team: anonymous callers share one, whatever their address."""
    return who.identity if who.identity.startswith("team:") else who.label


def refusal(caller: Caller, standing: Standing) -> ChatSSEError:
    """Why a request was not admitted, most lasting first (a budget, a quota, its team's), with when to come back."""
    config, team = caller.config, caller.team
    assert config is not None, "only a caller with limits is refused"
    error: ChatSSEError | None = _period_refusal(config, standing, "This caller")
    if error is None and team is not None and team.config is not None and standing.team is not None:
        error = _period_refusal(team.config, standing.team, f"This caller's team ({team.label})")
    if error is None and standing.tokens is not None and standing.tokens.remaining <= 0:
        wait = (1 - standing.tokens.remaining) / standing.tokens.rate
        error = RateLimited(
            f"This caller used its tokens per minute ({standing.tokens.limit}). Wait for Retry-After seconds.",
            retry_after=wait,
        )
    elif error is None and standing.requests is not None and standing.requests.remaining < 1:
        wait = (1 - standing.requests.remaining) / standing.requests.rate
        error = CallerRateLimited(
            f"This caller sent its requests per minute ({standing.requests.limit}). Wait for Retry-After seconds.",
            retry_after=wait,
        )
    elif error is None:
        error = TooManyStreams(
            f"This caller has {config.max_streams} replies open, as many as it may. Try again when one ends.",
            retry_after=1,
        )
        error.status_code = 429
    error.extra_headers = rate_headers(standing)
    return error


def _period_refusal(config: CallerConfig, standing: Standing, whose: str) -> ChatSSEError | None:
    """A spent budget or quota of a caller or team, if one is."""
    if standing.budget is not None and standing.budget.remaining <= 0:
        return BudgetExceeded(
            f"{whose} has spent its budget for this {config.budget_period} ({_amount(standing.budget.limit)}). "
            "Retry-After says when it resets.",
            retry_after=standing.budget.reset,
        )
    if standing.quota is not None and standing.quota.remaining <= 0:
        return QuotaExceeded(
            f"{whose} has used its token quota for this {config.quota_period} ({standing.quota.limit} tokens). "
            "Retry-After says when it resets.",
            retry_after=standing.quota.reset,
        )
    return None


def _amount(micros: float) -> str:
    """Micro-units as an amount of currency: 50, 0.125."""
    return f"{micros / MICRO:.6f}".rstrip("0").rstrip(".")


def rate_headers(standing: Standing) -> dict[str, str]:
    """OpenAI's names: x-ratelimit-{limit,remaining,reset}-{tokens,requests}, where that limit is set."""
    headers: dict[str, str] = {}
    for kind, level in (("tokens", standing.tokens), ("requests", standing.requests)):
        if level is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(level.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level.remaining)))
            headers[f"x-ratelimit-reset-{kind}"] = _duration(level.reset)
    return headers


def usage_body(caller: Caller, standing: Standing, now: float, currency: str) -> dict[str, Any]:
    """`GET /api/v1/usage`: a section per limit, null where none is set; a team's quota and budget under `team`."""
    config = caller.config

    def bucket(level: Level | None) -> dict[str, Any] | None:
        if level is None:
            return None
        remaining = max(0, math.floor(level.remaining))
        return {"limit": level.limit, "remaining": remaining, "reset_seconds": round(level.reset, 3)}

    body: dict[str, Any] = {
        "caller": caller.label if caller.config is not None or caller.keyed else caller.identity,
        "tokens_per_minute": bucket(standing.tokens),
        **_period_sections(config, standing, now, currency),
        "requests_per_minute": bucket(standing.requests),
        "streams": {"open": standing.open_streams, "limit": config.max_streams}
        if config is not None and config.max_streams
        else None,
    }
    team = caller.team
    if team is not None and standing.team is not None:
        body["team"] = {"name": team.label, **_period_sections(team.config, standing.team, now, currency)}
    return body


def _period_sections(config: CallerConfig | None, standing: Standing, now: float, currency: str) -> dict[str, Any]:
    """The quota and the budget of a caller or team: used and left in the current period, and when it resets."""
    quota = budget = None
    if standing.quota is not None and config is not None:
        used = standing.quota.limit - standing.quota.remaining
        quota = {
            "limit": standing.quota.limit,
            "used": int(used),
            "remaining": max(0, int(standing.quota.remaining)),
            "period": config.quota_period,
            "resets_at": _iso(now + standing.quota.reset),
        }
    if standing.budget is not None and config is not None:
        level = standing.budget
        budget = {
            "limit": level.limit / MICRO,
            "spent": (level.limit - level.remaining) / MICRO,
            "remaining": max(0.0, level.remaining) / MICRO,
            "period": config.budget_period,
            "resets_at": _iso(now + level.reset),
            "currency": currency,
        }
    return {"quota": quota, "budget": budget}


def _duration(seconds: float) -> str:
    """Like OpenAI's reset headers: 1s, 6m0s, 1h2m3s (fractions of a second below a minute: 0.5s)."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(round(moment), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
