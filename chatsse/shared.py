"""Where counts and kept replies live: in this process, or (CHATSSE_REDIS_URL) on Redis, shared by every worker
and instance. Redis is imported only when it is set."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from chatsse.callers.alerts import Alerts
from chatsse.callers.ledger import Ledger
from chatsse.callers.memory import MemoryLedger
from chatsse.ratelimit import MemoryRateLimiter, RateLimiter
from chatsse.responses.stored import RedisStoredResponses, StoredResponses
from chatsse.server.metrics import Metrics
from chatsse.settings import Settings

log = logging.getLogger("chatsse")


@dataclass
class SharedState:
    ledger: Ledger
    stored: StoredResponses
    limiter: RateLimiter | None
    remote: Any = None  # resume.redis.RedisStore: kept replies on Redis


def shared_state(settings: Settings, metrics: Metrics, alerts: Alerts) -> SharedState:
    """Callers' counters, stored responses' owners, the rate limit and kept replies, where `settings` put them."""
    limiter: RateLimiter | None = MemoryRateLimiter(*settings.rate_limit) if settings.rate_limit else None
    if not settings.redis_url:
        return SharedState(MemoryLedger(on_spent=alerts.spent), StoredResponses(), limiter)
    # Only with Redis: a gateway without it never loads redis-py.
    from chatsse.callers.redis import RedisLedger, once_on_redis
    from chatsse.ratelimit.redis import RedisRateLimiter
    from chatsse.redis import FAILURES, connect, probe
    from chatsse.resume.redis import RedisStore
    from chatsse.resume.writer import WriteCounts

    cluster = settings.redis_cluster
    if cluster is None:  # `chatsse serve` asked once already, and set it
        try:
            cluster = probe(settings.redis_url, settings.redis_ca_file)
        except FAILURES as exc:  # it degrades as a lost Redis does, and says how to choose
            log.warning("CHATSSE_REDIS_URL does not answer (%s): taking it for a single Redis", type(exc).__name__)
            cluster = False
    client = connect(settings.redis_url, cluster, settings.redis_ca_file)
    counts = WriteCounts(
        metrics.redis_failures.inc,
        metrics.resume_writes_refused.inc,
        metrics.resume_events_shed.inc,
        metrics.resume_queue_bytes.set,
    )
    remote = RedisStore(
        client,
        settings.upstream_timeout,
        counts,
        cluster,
        metrics.background_failed,
        settings.resume_key_seconds,
        settings.resume_queue_bytes,
    )
    if settings.rate_limit:
        limiter = RedisRateLimiter(*settings.rate_limit, client, metrics.redis_failures.inc)
    ledger = RedisLedger(
        client,
        metrics.redis_failures.inc,
        cluster,
        metrics.background_failed,
        metrics.admissions_unchecked.inc,
        alerts.spent,
    )
    alerts.once = once_on_redis(client)
    return SharedState(ledger, RedisStoredResponses(client), limiter, remote)
