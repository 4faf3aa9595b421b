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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from chatsse.callers.identity import Caller
from chatsse.callers.ledger import STREAM_LEASE_SECONDS, Level, Standing
from chatsse.callers.periods import period_bounds
from chatsse.redis import Reachability

# KEYS: rpm, tpm, quota, open. ARGV: mode (admit | peek | charge), rpm, tpm, quota, quota end (unix s), max streams,
# lease (s), reply id (charge: the ids of the replies charged, comma-separated), tokens. Limits of 0 are not set.
# Returns (as strings) admitted, now, rpm level, tpm level, quota used, open replies.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode, rpm, tpm, quota = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local quota_end, max_streams, lease = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local reply, tokens = ARGV[8], tonumber(ARGV[9])
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


class RedisLedger:
    def __init__(self, client: redis.Redis, on_failure: Callable[[], None]) -> None:
        self.client = client
        self.script = client.register_script(_SCRIPT)
        self.reachability = Reachability(
            "caller limits: Redis unreachable (%s); letting requests through",
            "caller limits: Redis is back",
            on_failure,
        )
        self._charges: dict[str, _Charges] = {}
        self._sending: asyncio.Task[None] | None = None

    async def admit(self, caller: Caller, reply_id: str) -> Standing:
        return await self._run("admit", caller, reply_id, 0)

    async def charge(self, caller: Caller, reply_id: str, tokens: int) -> None:
        if caller.config is None:
            return
        charges = self._charges.setdefault(caller.identity, _Charges(caller))
        charges.tokens += tokens
        charges.replies.append(reply_id)
        charged = asyncio.get_running_loop().create_future()
        charges.waiting.append(charged)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send_charges(), name="chatsse-caller-charges")
        await charged

    async def standing(self, caller: Caller) -> Standing:
        return await self._run("peek", caller, "", 0)

    async def _send_charges(self) -> None:
        while self._charges:
            batch, self._charges = self._charges, {}
            pipe = self.client.pipeline(transaction=False)
            for charges in batch.values():
                await self._run("charge", charges.caller, ",".join(charges.replies), charges.tokens, pipe)
            try:
                await pipe.execute()
            except (RedisError, OSError) as exc:
                self.reachability.failed(exc, len(batch))
            else:
                self.reachability.answered()
            for charges in batch.values():
                for charged in charges.waiting:
                    if not charged.done():
                        charged.set_result(None)

    async def _run(self, mode: str, caller: Caller, reply_id: str, tokens: int, pipe: Any = None) -> Standing:
        config = caller.config
        if config is None:
            return Standing(admitted=True)
        quota_end = 0.0
        quota_key = "-"
        if config.token_quota and config.quota_period:
            # The period from this clock; Redis's own decides the rest. They agree but within a period's edge.
            start, quota_end = period_bounds(config.quota_period, time.time())
            quota_key = f"q:{start:.0f}"
        tag = "chatsse:{c:" + caller.identity + "}:"
        keys = [tag + "rpm", tag + "tpm", tag + quota_key, tag + "open"]
        args: list[Any] = [
            mode,
            config.requests_per_minute or 0,
            config.tokens_per_minute or 0,
            config.token_quota or 0,
            quota_end,
            config.max_streams or 0,
            STREAM_LEASE_SECONDS,
            reply_id,
            tokens,
        ]
        if pipe is not None:  # a charge, sent with the others
            await self.script(keys=keys, args=args, client=pipe)
            return Standing(admitted=True)
        try:
            result = await self.script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self.reachability.failed(exc)
            return Standing(admitted=True)
        self.reachability.answered()
        admitted, now, rpm_level, tpm_level, used, open_streams = (float(v) for v in result)
        standing = Standing(admitted=bool(admitted), open_streams=int(open_streams))
        if config.requests_per_minute:
            limit = config.requests_per_minute
            standing.requests = Level(limit, rpm_level, (limit - rpm_level) / (limit / 60))
        if config.tokens_per_minute:
            limit = config.tokens_per_minute
            standing.tokens = Level(limit, tpm_level, (limit - tpm_level) / (limit / 60))
        if config.token_quota:
            standing.quota = Level(config.token_quota, config.token_quota - used, max(0.0, quota_end - now))
        return standing
