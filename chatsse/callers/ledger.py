"""A caller's limits as they stand, and what follows from them: admit or refuse (which error, when to come back),
OpenAI's x-ratelimit-* headers, and the body of `GET /api/v1/usage`. The counting itself is a backend's:
`memory.py` in this process, `redis.py` shared by every worker and instance.

Requests per minute and tokens per minute are token buckets that refill continuously (a minute's allowance at
most). A request needs one request left and a token balance above zero; its tokens are charged when its reply
ends, so one reply may overdraw the balance by its own size, as Azure API Management's token limit does. The
quota counts tokens per UTC calendar period and admits while any is left. Open replies are counted per caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from chatsse.callers.config import CallerConfig
from chatsse.callers.identity import Caller
from chatsse.errors import CallerRateLimited, ChatSSEError, QuotaExceeded, RateLimited, TooManyStreams

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
    open_streams: int = 0


class Ledger(Protocol):
    async def admit(self, caller: Caller, reply_id: str) -> Standing:
        """Check every limit and, if all allow it, count the request and its open reply, atomically."""
        ...

    async def charge(self, caller: Caller, reply_id: str, tokens: int) -> None:
        """The reply ended: charge its tokens, and it no longer counts as open."""
        ...

    async def standing(self, caller: Caller) -> Standing:
        """The limits as they are, counting nothing."""
        ...


def refusal(config: CallerConfig, standing: Standing) -> ChatSSEError:
    """Why a request was not admitted, most lasting first, with when to come back."""
    error: ChatSSEError
    if standing.quota is not None and standing.quota.remaining <= 0:
        error = QuotaExceeded(
            f"This caller has used its token quota for this {config.quota_period} ({standing.quota.limit} tokens). "
            "Retry-After says when it resets.",
            retry_after=standing.quota.reset,
        )
    elif standing.tokens is not None and standing.tokens.remaining <= 0:
        wait = (1 - standing.tokens.remaining) / standing.tokens.rate
        error = RateLimited(
            f"This caller used its tokens per minute ({standing.tokens.limit}). Wait for Retry-After seconds.",
            retry_after=wait,
        )
    elif standing.requests is not None and standing.requests.remaining < 1:
        wait = (1 - standing.requests.remaining) / standing.requests.rate
        error = CallerRateLimited(
            f"This caller sent its requests per minute ({standing.requests.limit}). Wait for Retry-After seconds.",
            retry_after=wait,
        )
    else:
        error = TooManyStreams(
            f"This caller has {config.max_streams} replies open, as many as it may. Try again when one ends.",
            retry_after=1,
        )
        error.status_code = 429
    error.extra_headers = rate_headers(standing)
    return error


def rate_headers(standing: Standing) -> dict[str, str]:
    """OpenAI's names: x-ratelimit-{limit,remaining,reset}-{tokens,requests}, where that limit is set."""
    headers: dict[str, str] = {}
    for kind, level in (("tokens", standing.tokens), ("requests", standing.requests)):
        if level is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(level.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level.remaining)))
            headers[f"x-ratelimit-reset-{kind}"] = _duration(level.reset)
    return headers


def usage_body(caller: Caller, standing: Standing, now: float) -> dict[str, Any]:
    """`GET /api/v1/usage`: a section per limit, null where none is set."""
    config = caller.config

    def bucket(level: Level | None) -> dict[str, Any] | None:
        if level is None:
            return None
        remaining = max(0, math.floor(level.remaining))
        return {"limit": level.limit, "remaining": remaining, "reset_seconds": round(level.reset, 3)}

    quota = None
    if standing.quota is not None and config is not None:
        used = standing.quota.limit - standing.quota.remaining
        quota = {
            "limit": standing.quota.limit,
            "used": int(used),
            "remaining": max(0, int(standing.quota.remaining)),
            "period": config.quota_period,
            "resets_at": _iso(now + standing.quota.reset),
        }
    return {
        "caller": caller.label if caller.config is not None or caller.keyed else caller.identity,
        "tokens_per_minute": bucket(standing.tokens),
        "quota": quota,
        "requests_per_minute": bucket(standing.requests),
        "streams": {"open": standing.open_streams, "limit": config.max_streams}
        if config is not None and config.max_streams
        else None,
    }


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
