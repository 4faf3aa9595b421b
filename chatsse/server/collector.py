"""The cyclic collector kept off the streams' path. After start-up everything loaded is frozen (no pass walks it
again) and young passes run by themselves, every 50,000 allocations; the older generations are collected only
here: when few streams are open (a pass then walks little and stalls few), or, however many are open, once the
process has grown CHATSSE_GC_MAX_GROWTH_MB since the last such pass, so that garbage cannot grow without limit.

Why: with thousands of streams open, a pass over generation 1 or 2 walks every object they hold (about 200 each)
and stalls every stream's tokens for 200 to 300 ms; CPython schedules those passes by allocation counts, so they
land in the middle of the load (bench/REPORT.md, "Under overload"). Checked every half second from the lifespan.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from chatsse.server.lifecycle import StreamRegistry
from chatsse.server.memory import rss_mb

YOUNG = 50_000  # allocations between young passes (CPython's default: 700)
NEVER = 1 << 30  # an older generation's threshold: never by itself
QUIET_STREAMS = 20  # this few open is a lull
CHECK_SECONDS = 0.5


def settle() -> None:
    """Once the app is built, before it serves: what start-up loaded leaves the collector's sight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, NEVER, NEVER)


def settled() -> bool:
    """Whether this process's collector was settled (a serving process; tests build apps in their own)."""
    return gc.get_threshold()[1:] == (NEVER, NEVER)


class Collector:
    """Runs the older generations' passes at lulls, or past the growth bound (`passed(reason)` counts each)."""

    def __init__(self, streams: StreamRegistry, max_growth_mb: float, passed: Callable[[str], None]) -> None:
        self.streams = streams
        self.max_growth_mb = max_growth_mb
        self.passed = passed
        self.since_mb = rss_mb()  # the process's size after the last older pass

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            self.check()

    def check(self) -> str | None:
        """Collect every generation now if it is time; why it was (lull, growth), or None."""
        if gc.get_count()[1] == 0:  # no young pass since the last older one: nothing was promoted
            return None
        size = rss_mb()
        if self.streams.count <= QUIET_STREAMS:
            reason = "lull"
        elif self.max_growth_mb and size - self.since_mb > self.max_growth_mb:
            reason = "growth"
        else:
            return None
        gc.collect()
        self.since_mb = rss_mb()
        self.passed(reason)
        return reason
