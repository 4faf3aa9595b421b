"""Callers you can govern: who a request comes from, what it may use and spend, and what it spent.

config.py     the [[caller]] tables, [anonymous] and quotas_in_memory of the CHATSSE_CONFIG file
identity.py   Caller: who a request comes from, found by the access middleware
ledger.py     a caller's limits as they stand: admit or refuse, rate-limit headers, usage
memory.py     the counters in this process
redis.py      the counters on Redis, shared by every worker and instance (imported only with Redis)
periods.py    quota periods: UTC calendar hours, days, weeks, months
tokens.py     a reply's tokens: the upstream's usage, else an estimate
"""

from chatsse.callers.config import CallerConfig, CallerTables
from chatsse.callers.identity import Caller, current_caller

__all__ = ["Caller", "CallerConfig", "CallerTables", "current_caller"]
