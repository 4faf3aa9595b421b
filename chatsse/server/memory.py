"""Memory given back after a peak of streams: once most of a peak's streams have ended, collect and trim the heap.

A process that served 2,000 open streams keeps the memory they used: CPython's collector frees their cyclic garbage
only at its next pass, and the C allocator keeps freed pages until asked to return them. A long-lived gateway would
then sit at its highest peak for good. Once the open streams have stayed below a tenth of a peak for a few seconds,
one collection and glibc's `malloc_trim` return what can be returned: most of it with `PYTHONMALLOC=malloc`, little
under CPython's own small-object allocator, whose arenas stay pinned by a few live objects (bench/REPORT.md, #23).
Checked every few seconds from the lifespan; nothing happens per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path

from chatsse.background import Supervised
from chatsse.server.lifecycle import StreamRegistry

log = logging.getLogger("chatsse")
CHECK_SECONDS = 2.0
PEAK_STREAMS = 50  # a smaller peak leaves too little behind to be worth a full collection
FALLEN_TO = 0.1  # the share of the peak still open when it counts as over
# How long a peak must have been over first: its idle upstream connections hold their buffers until the pool
# closes them (httpx's keepalive expiry, 5 s, which aiohttp checks only every 5 s), and the last streams of the
# peak release theirs later still: trimming before that returns little.
SETTLE_SECONDS = 15.0


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
        return trim
    except (OSError, AttributeError):
        return None


def rss_mb() -> float:
    """This process's resident memory, from /proc (0 where there is none)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20
    return 0.0


class MemoryReturn:
    """Watches the open streams' peak; once it is over, collects and trims the heap once, and starts a new peak."""

    def __init__(
        self,
        streams: StreamRegistry,
        returned: Callable[[], None],
        every: float = CHECK_SECONDS,
        background_failed: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.streams, self.returned, self.every = streams, returned, every
        self.background_failed = background_failed
        self.trim = _malloc_trim()
        self.over_since: float | None = None  # when the peak was first seen over
        self.task: asyncio.Task[None] | None = None
        self.supervised: Supervised | None = None

    def start(self) -> None:
        self.supervised = Supervised("memory-return", self._watch, self.background_failed)
        self.task = self.supervised.start()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.check()

    def check(self) -> bool:
        """Return memory now if a peak has been over for SETTLE_SECONDS; True if it did."""
        peak, now = self.streams.peak, self.streams.count
        if peak < PEAK_STREAMS or now > peak * FALLEN_TO:
            self.over_since = None
            return False
        clock = time.monotonic()
        if self.over_since is None:
            self.over_since = clock
        if clock - self.over_since < SETTLE_SECONDS:
            return False
        self.over_since = None
        before = rss_mb()
        gc.collect()
        if self.trim is not None:
            self.trim(0)
        self.streams.peak = now
        self.returned()
        log.info("memory returned after a peak of %d streams: RSS %.0f MB, now %.0f MB", peak, before, rss_mb())
        return True
