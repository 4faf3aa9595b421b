"""Callers you can govern: who a request comes from, what it may use and spend, and what it spent.

config.py     the [[caller]] and [[team]] tables, [anonymous] and quotas_in_memory of the CHATSSE_CONFIG file
identity.py   Caller: who a request comes from (and its team), found by the access middleware
keys.py       caller keys: hashes, several per caller with expiries, `chatsse keys new|rotate`
ledger.py     a caller's limits as they stand: admit or refuse, rate-limit headers, usage
memory.py     the counters in this process
redis.py      the counters on Redis, shared by every worker and instance (imported only with Redis)
scripts.py    the Lua scripts of those counters, and each call's keys and arguments
periods.py    quota and budget periods: UTC calendar hours, days, weeks, months
tokens.py     a reply's tokens: the upstream's usage, else an estimate
alerts.py     budget alerts: once per threshold and period, to a webhook, off the request's path
report.py     the spend report: every caller's and team's spend in a period, as JSON, CSV or a table
"""

from chatsse.callers.config import CallerConfig, CallerTables
from chatsse.callers.identity import Caller, current_caller

__all__ = ["Caller", "CallerConfig", "CallerTables", "current_caller"]
