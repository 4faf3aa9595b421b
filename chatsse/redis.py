"""The Redis that shared state lives on (CHATSSE_REDIS_URL): the connection, and the one "lost / back" latch.

Imported only when CHATSSE_REDIS_URL is set, like every module that uses it (`resume.redis`, `ratelimit.redis`),
so a gateway without Redis never loads redis-py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis.asyncio as redis

log = logging.getLogger("chatsse")

BLOCK_MS = 1000  # the longest a blocking read waits before it looks around


def connect(url: str) -> redis.Redis:
    # Bounded waits everywhere: a lost Redis must make calls fail, never hang.
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=BLOCK_MS / 1000 + 3)


class Reachability:
    """Whether Redis answered the last call of one user of it: a warning when it is lost and one when it is back
    (not one per failed call), and every failed operation counted through `on_failure` (the metrics)."""

    def __init__(self, lost: str, back: str, on_failure: Callable[[], None]) -> None:
        self.lost = lost  # formatted with the exception's type name
        self.back = back
        self.on_failure = on_failure
        self.healthy = True

    def failed(self, exc: BaseException, operations: int = 1) -> None:
        for _ in range(operations):
            self.on_failure()
        if self.healthy:
            log.warning(self.lost, type(exc).__name__)
        self.healthy = False

    def answered(self) -> None:
        if not self.healthy:
            log.warning(self.back)
        self.healthy = True
