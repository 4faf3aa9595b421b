"""The Lua scripts of the callers' counters on Redis, and each call's keys and arguments (pure: `redis.py` sends
them). One script admits, peeks at or charges a caller or team; another adds to the spend report's day counters."""

from __future__ import annotations

import functools
import time
from typing import Any

from chatsse.callers.config import CallerConfig
from chatsse.callers.identity import Caller
from chatsse.callers.ledger import STREAM_LEASE_SECONDS, Level, Standing
from chatsse.callers.periods import current_bounds

# KEYS: rpm, tpm, quota, open, budget. ARGV: mode (admit | peek | charge), the limits ("rpm tpm quota max_streams
# lease budget", 0 where not set), the quota and budget periods' ends ("quota_end budget_end", unix s), reply id
# (charge: the ids of the replies charged, comma-separated), "tokens cost". Few arguments: redis-py's cost of a call
# grows with them. Returns (as strings) admitted, now, rpm level, tpm level, quota used, open replies, budget spent.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode, reply = ARGV[1], ARGV[4]
local n = {}
for v in string.gmatch(ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[5], '%S+') do n[#n + 1] = tonumber(v) end
local rpm, tpm, quota, max_streams, lease, budget = n[1], n[2], n[3], n[4], n[5], n[6]
local quota_end, budget_end, tokens, cost = n[7], n[8], n[9], n[10]
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
local spent = tonumber(redis.call('GET', KEYS[5]) or '0')
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
  if budget > 0 and cost > 0 then
    spent = redis.call('INCRBY', KEYS[5], cost)
    redis.call('EXPIREAT', KEYS[5], math.ceil(budget_end))
  end
elseif (rpm == 0 or r >= 1) and (tpm == 0 or k > 0) and (quota == 0 or used < quota)
    and (budget == 0 or spent < budget) and (max_streams == 0 or open < max_streams) then
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
return {tostring(admitted), tostring(now), tostring(r), tostring(k), tostring(used), tostring(open), tostring(spent)}
"""

# The spend report's counters of one row and day. KEYS: the day's hash. ARGV: when it expires (unix s), then
# field, amount, field, amount...
COUNT = """
for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIREAT', KEYS[1], ARGV[1])
"""


def call(mode: str, who: Caller, reply_id: str, tokens: int = 0, cost: int = 0) -> dict[str, Any]:
    """The script's keys and arguments for one call about a caller or team."""
    config = who.config
    assert config is not None
    ends, quota_key, budget_key = [0, 0], "-", "-"
    if config.token_quota and config.quota_period:
        # The period from this clock; Redis's own decides the rest. They agree but within a period's edge.
        start, end = period_now(config.quota_period)
        ends[0], quota_key = int(end), f"q:{start:.0f}"
    if config.budget and config.budget_period:
        start, end = period_now(config.budget_period)
        ends[1], budget_key = int(end), f"b:{start:.0f}"
    tag = "chatsse:{c:" + who.identity + "}:"
    return {
        "keys": [tag + "rpm", tag + "tpm", tag + quota_key, tag + "open", tag + budget_key],
        "args": [mode, _limits(config), f"{ends[0]} {ends[1]}", reply_id, f"{tokens} {cost}"],
    }


@functools.cache
def _limits(config: CallerConfig) -> str:
    numbers = (config.requests_per_minute, config.tokens_per_minute, config.token_quota, config.max_streams)
    return " ".join(str(n or 0) for n in numbers) + f" {STREAM_LEASE_SECONDS:.0f} {config.budget or 0}"


def day_key(row: str, day: float) -> str:
    return "chatsse:{r:" + row + "}:" + f"{day:.0f}"


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def period_now(period: str) -> tuple[float, float]:
    """This clock's current period."""
    return current_bounds(period, time.time())


def standing_of(config: CallerConfig, result: list[Any]) -> Standing:
    admitted, now, rpm_level, tpm_level, used, open_streams, spent = (float(v) for v in result)
    standing = Standing(admitted=bool(admitted), open_streams=int(open_streams))
    if config.requests_per_minute:
        limit = config.requests_per_minute
        standing.requests = Level(limit, rpm_level, (limit - rpm_level) / (limit / 60))
    if config.tokens_per_minute:
        limit = config.tokens_per_minute
        standing.tokens = Level(limit, tpm_level, (limit - tpm_level) / (limit / 60))
    if config.token_quota and config.quota_period:
        standing.quota = Level(
            config.token_quota, config.token_quota - used, max(0.0, period_now(config.quota_period)[1] - now)
        )
    if config.budget and config.budget_period:
        standing.budget = Level(
            config.budget, config.budget - spent, max(0.0, period_now(config.budget_period)[1] - now)
        )
    return standing
