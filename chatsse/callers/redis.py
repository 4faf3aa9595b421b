"""Callers' counters on Redis, shared by every worker and instance: the rules of `ledger.py` as two Lua scripts,
one call to admit a request and one to charge its reply, on Redis's clock.

A caller's keys share the hash tag `{c:<identity>}` (one Redis Cluster slot per caller): `...:rpm` and `...:tpm`
(bucket level and when, expiring once full again), `...:q:<period start>` (tokens used, expiring at the period's
end) and `...:open` (open replies with their lease ends). Charges are sent as a group commit: those that come
while one call is under way go together in the next, one script call per caller, in one round trip. If Redis is
lost, requests are let through, as the rate limit does, and the failures counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatsse.callers.config import CallerConfig
from chatsse.callers.identity import Caller
from chatsse.callers.ledger import STREAM_LEASE_SECONDS, Level, Standing
from chatsse.callers.periods import period_bounds
from chatsse.redis import FAILURES, Client, Reachability, pipeline, run_script

log = logging.getLogger("chatsse")
ADMISSION_WAIT_SECONDS = 1.0  # the longest a request waits for its caller's limits (or its charge) on Redis

# KEYS: rpm, tpm, quota, open. ARGV: mode (admit | peek | charge), the limits ("rpm tpm quota max_streams lease",
# 0 where not set), the quota period's end (unix s), reply id (charge: the ids of the replies charged,
# comma-separated), tokens. Few arguments: redis-py's cost of a call grows with them. Returns (as strings)
# admitted, now, rpm level, tpm level, quota used, open replies.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode, reply, tokens, quota_end = ARGV[1], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[3])
local limits = {}
for n in string.gmatch(ARGV[2], '%S+') do limits[#limits + 1] = tonumber(n) end
local rpm, tpm, quota, max_streams, lease = limits[1], limits[2], limits[3], limits[4], limits[5]
local function level(key, limit)
  if limit == 0 then return 0 end
  local state = redis.call('HMGET', key, 'l', 'w')
  local l, w = tonumber(state[1]), tonumber(state[2])
  if l == nil then return limit end
  return math.min(limit, l + (now - w) * limit / 60)
end
local function store(key, limit, value)
  redis.call('HSET', key, 'l', tostring(value), 'w', tostring(now))
  redis.call('EXPIRE', key, math.ceil((limit - value) / (limit / 60)) + 60)
end
local r, k = level(KEYS[1], rpm), level(KEYS[2], tpm)
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
local open = 0
if max_streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  open = redis.call('ZCARD', KEYS[4])
end
local admitted = 0
if mode == 'charge' then
  for id in string.gmatch(reply, '[^,]+') do redis.call('ZREM', KEYS[4], id) end
  if tpm > 0 then k = k - tokens; store(KEYS[2], tpm, k) end
  if quota > 0 then
    used = redis.call('INCRBY', KEYS[3], tokens)
    redis.call('EXPIREAT', KEYS[3], math.ceil(quota_end))
  end
elseif (rpm == 0 or r >= 1) and (tpm == 0 or k > 0) and (quota == 0 or used < quota)
    and (max_streams == 0 or open < max_streams) then
  admitted = 1
  if mode == 'admit' then
    if rpm > 0 then r = r - 1; store(KEYS[1], rpm, r) end
    if max_streams > 0 then
      redis.call('ZADD', KEYS[4], now + lease, reply)
      redis.call('EXPIRE', KEYS[4], math.ceil(lease))
      open = open + 1
    end
  end
end
return {tostring(admitted), tostring(now), tostring(r), tostring(k), tostring(used), tostring(open)}
"""


@dataclass
class _Charges:
    """A caller's charges waiting for the next call."""

    caller: Caller
    tokens: int = 0
    replies: list[str] = field(default_factory=list)
    waiting: list[asyncio.Future[None]] = field(default_factory=list)


@dataclass
class _Admission:
    caller: Caller
    reply_id: str
    standing: asyncio.Future[Standing]

    @property
    def config(self) -> CallerConfig:
        assert self.caller.config is not None, "only a caller with limits is admitted on Redis"
        return self.caller.config


class RedisLedger:
    def __init__(
        self,
        client: Client,
        on_failure: Callable[[], None],
        cluster: bool = False,
        background_failed: Callable[[str], None] = lambda name: None,
        unchecked: Callable[[], None] = lambda: None,
    ) -> None:
        self.background_failed = background_failed  # the sender raised (counted; what waited on it goes on)
        self.unchecked = unchecked  # an admission that waited its longest and was let through
        self.client = client
        self.cluster = cluster
        self.script = client.register_script(_SCRIPT)
        self.reachability = Reachability(
            "caller limits: Redis unreachable (%s); letting requests through",
            "caller limits: Redis is back",
            on_failure,
        )
        self._charges: dict[str, _Charges] = {}
        self._admissions: list[_Admission] = []
        self._sending: asyncio.Task[None] | None = None

    async def admit(self, caller: Caller, reply_id: str) -> Standing:
        if caller.config is None:
            return Standing(admitted=True)
        admission = _Admission(caller, reply_id, asyncio.get_running_loop().create_future())
        self._admissions.append(admission)
        self._send_soon()
        try:
            # shield: a slow answer still settles the admission (and its open-reply slot) when it comes
            return await asyncio.wait_for(asyncio.shield(admission.standing), ADMISSION_WAIT_SECONDS)
        except TimeoutError:
            self.unchecked()
            log.warning(
                "caller limits: no answer from Redis within %.0f s; letting the request through", ADMISSION_WAIT_SECONDS
            )
            return Standing(admitted=True)

    async def charge(self, caller: Caller, reply_id: str, tokens: int) -> None:
        if caller.config is None:
            return
        unsent = next((a for a in self._admissions if a.reply_id == reply_id), None)
        if unsent is not None:  # its admission was cancelled before it was sent: there is no slot to give back
            self._admissions.remove(unsent)
            unsent.standing.cancel()
            if not tokens:
                return
        charges = self._charges.setdefault(caller.identity, _Charges(caller))
        charges.tokens += tokens
        charges.replies.append(reply_id)
        charged = asyncio.get_running_loop().create_future()
        charges.waiting.append(charged)
        self._send_soon()
        # A reply's end waits for its charge (so the next request sees it), but no longer than an admission would:
        # past that it is made when Redis answers.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(charged), ADMISSION_WAIT_SECONDS)

    async def standing(self, caller: Caller) -> Standing:
        config = caller.config
        if config is None:
            return Standing(admitted=True)
        try:
            return _standing(config, await self.script(**_call("peek", caller, "", 0)))
        except FAILURES as exc:
            self.reachability.failed(exc)
            return Standing(admitted=True)

    def _send_soon(self) -> None:
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send(), name="chatsse-caller-limits")

    async def _send(self) -> None:
        """Everything asked while the last call was under way, in one round trip: the charges first (they happened
        first), one script call per caller, then each admission. Whatever happens, everyone waiting is answered:
        with Redis lost, or when something nobody expected is raised (logged and counted), admissions are let
        through and charges dropped."""
        while self._charges or self._admissions:
            charges, self._charges = self._charges, {}
            admissions, self._admissions = self._admissions, []
            results: list[Any] = [None] * (len(charges) + len(admissions))
            try:
                results = await self._round(charges, admissions)
                standings = [
                    Standing(admitted=True) if result is None else _standing(admission.config, result)
                    for admission, result in zip(admissions, results[len(charges) :], strict=True)
                ]
            except Exception:
                log.exception("background task caller-limits failed; letting its requests through")
                self.background_failed("caller-limits")
                standings = [Standing(admitted=True)] * len(admissions)
            for charge in charges.values():
                for charged in charge.waiting:
                    if not charged.done():
                        charged.set_result(None)
            for admission, standing in zip(admissions, standings, strict=True):
                if not admission.standing.done():
                    admission.standing.set_result(standing)

    async def _round(self, charges: dict[str, _Charges], admissions: list[_Admission]) -> list[Any]:
        """One pipeline of the script's calls; a None result for each when Redis failed them."""
        async with pipeline(self.client) as pipe:
            for charge in charges.values():
                call = _call("charge", charge.caller, ",".join(charge.replies), charge.tokens)
                await run_script(pipe, self.script, call["keys"], call["args"], self.cluster)
            for admission in admissions:
                call = _call("admit", admission.caller, admission.reply_id, 0)
                await run_script(pipe, self.script, call["keys"], call["args"], self.cluster)
            try:
                results: list[Any] = await pipe.execute()
            except FAILURES as exc:
                self.reachability.failed(exc)
                return [None] * (len(charges) + len(admissions))
            self.reachability.answered()
            return results


def _call(mode: str, caller: Caller, reply_id: str, tokens: int) -> dict[str, Any]:
    """The script's keys and arguments for one call about `caller`."""
    config = caller.config
    assert config is not None
    quota_end, quota_key = 0, "-"
    if config.token_quota and config.quota_period:
        # The period from this clock; Redis's own decides the rest. They agree but within a period's edge.
        start, end = _period(config.quota_period)
        quota_end, quota_key = int(end), f"q:{start:.0f}"
    tag = "chatsse:{c:" + caller.identity + "}:"
    return {
        "keys": [tag + "rpm", tag + "tpm", tag + quota_key, tag + "open"],
        "args": [mode, _limits(config), quota_end, reply_id, tokens],
    }


@functools.cache
def _limits(config: CallerConfig) -> str:
    numbers = (config.requests_per_minute, config.tokens_per_minute, config.token_quota, config.max_streams)
    return " ".join(str(n or 0) for n in numbers) + f" {STREAM_LEASE_SECONDS:.0f}"


_periods: dict[str, tuple[float, float]] = {}


def _period(period: str) -> tuple[float, float]:
    """This clock's current quota period, computed again only when it ends."""
    now = time.time()
    bounds = _periods.get(period)
    if bounds is None or not bounds[0] <= now < bounds[1]:
        bounds = _periods[period] = period_bounds(period, now)
    return bounds


def _standing(config: CallerConfig, result: list[Any]) -> Standing:
    admitted, now, rpm_level, tpm_level, used, open_streams = (float(v) for v in result)
    standing = Standing(admitted=bool(admitted), open_streams=int(open_streams))
    if config.requests_per_minute:
        limit = config.requests_per_minute
        standing.requests = Level(limit, rpm_level, (limit - rpm_level) / (limit / 60))
    if config.tokens_per_minute:
        limit = config.tokens_per_minute
        standing.tokens = Level(limit, tpm_level, (limit - tpm_level) / (limit / 60))
    if config.token_quota and config.quota_period:
        standing.quota = Level(
            config.token_quota, config.token_quota - used, max(0.0, _period(config.quota_period)[1] - now)
        )
    return standing
