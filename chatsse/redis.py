"""The Redis that shared state lives on (CHATSSE_REDIS_URL), standalone or a Redis Cluster: the connection, scripts
that run in either, and the one "lost / back" latch.

In a cluster every multi-key script and pipeline touches one hash slot: each user of Redis gives the keys that go
together one hash tag (a stream's by its id, a caller's by its name). Imported only when CHATSSE_REDIS_URL is set,
like every module that uses it (`resume.redis`, `ratelimit.redis`, `callers.redis`), so a gateway without Redis
never loads redis-py.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisClusterException, RedisError

log = logging.getLogger("chatsse")

BLOCK_MS = 1000  # the longest a blocking read waits before it looks around
Client = redis.asyncio.Redis | RedisCluster
# What a call to a lost, failing over or partial Redis raises: a cluster's own errors (a slot no node serves) are
# not RedisErrors.
FAILURES = (RedisError, RedisClusterException, OSError)


def _tls(ca_file: str | None) -> dict[str, Any]:
    # A private CA for rediss:// (else the system's, which Azure's certificates chain to).
    return {"ssl_ca_certs": ca_file} if ca_file else {}


def connect(url: str, cluster: bool, ca_file: str | None = None) -> Client:
    """A client for `url` (redis://, rediss:// for TLS, unix://; a user and password in the URL for ACLs)."""
    # Bounded waits everywhere: a lost Redis must make calls fail, never hang; a few quick retries ride out a
    # dropped connection or a cluster's failover without holding a request for long.
    options: dict[str, Any] = {
        "socket_connect_timeout": 2,
        "socket_timeout": BLOCK_MS / 1000 + 3,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        **(_tls(ca_file) if url.startswith("rediss://") else {}),
    }
    if not cluster:
        return redis.asyncio.Redis.from_url(url, **options)
    # A connection per follower reading on another instance: redis-py's default of 100 per node would refuse more.
    return RedisCluster.from_url(url, max_connections=1_000_000, **options)


def probe(url: str, ca_file: str | None = None) -> bool:
    """Ping the Redis at `url` and say whether it is a Redis Cluster (`INFO cluster`): asked once at start-up.
    Raises one of FAILURES when it does not answer."""
    tls = _tls(ca_file) if url.startswith("rediss://") else {}
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, **tls)
    try:
        client.ping()
        return bool(client.info("cluster").get("cluster_enabled"))
    finally:
        client.close()


@asynccontextmanager
async def pipeline(client: Client) -> AsyncIterator[Any]:
    """A pipeline (not a transaction), reset however its block ends: a failed or cancelled one would hold its
    connection until the collector finds it. (Not `async with client.pipeline()`: a cluster's pipeline connects to
    the cluster on entering it, outside the caller's handling of a lost Redis.) A cluster's pipeline holds no
    connection between calls and is left alone: with it reset after each call, the sharded stop listeners failed
    with SlotNotCoveredError now and then (seen in the TLS cluster test: a stop that found no listener)."""
    pipe: Any = client.pipeline(transaction=False)
    try:
        yield pipe
    finally:
        if not isinstance(client, RedisCluster):
            with contextlib.suppress(*FAILURES):
                await pipe.reset()


async def run_script(pipe: Any, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], cluster: bool) -> None:
    """Queue `script` on a pipeline. A cluster's pipeline refuses EVALSHA (a NOSCRIPT answer cannot be recovered
    inside it), so there the script goes whole with EVAL, routed to the node of its keys' one slot."""
    if cluster:
        pipe.eval(script.script, len(keys), *keys, *args)
    else:
        await script(keys=keys, args=args, client=pipe)


class Reachability:
    """Whether Redis answered the last call of one user of it: a warning when it is lost and one when it is back
    (not one per failed call), and every failed call counted through `on_failure` (the metrics)."""

    def __init__(self, lost: str, back: str, on_failure: Callable[[], None]) -> None:
        self.lost = lost  # formatted with the exception's type name
        self.back = back
        self.on_failure = on_failure
        self.healthy = True

    def failed(self, exc: BaseException) -> None:
        """One failed call (a pipeline of any size is one): counted once, however many items it carried."""
        self.on_failure()
        if self.healthy:
            log.warning(self.lost, type(exc).__name__)
        self.healthy = False

    def answered(self) -> None:
        if not self.healthy:
            log.warning(self.back)
        self.healthy = True
