"""The collector kept off the streams' path (#35): the older generations are collected at a lull, or past the growth
bound whatever is open (a real `chatsse serve` settles it so: tests/test_memory.py)."""

from __future__ import annotations

import gc

from chatsse.server.collector import QUIET_STREAMS, Collector
from chatsse.server.lifecycle import StreamRegistry


def test_the_older_generations_wait_for_a_lull_or_the_growth_bound() -> None:
    streams, passes = StreamRegistry(0), list[str]()
    collector = Collector(streams, max_growth_mb=64, passed=passes.append)
    saved = gc.get_threshold()
    try:
        gc.collect()
        assert collector.check() is None  # no young pass since: nothing was promoted, nothing to do
        gc.collect(0)
        for _ in range(QUIET_STREAMS + 1):
            streams.admit()
        assert collector.check() is None  # busy, and not grown past the bound
        garbage = [bytearray(1 << 20) for _ in range(80)]  # 80 MB more resident
        gc.collect(0)
        assert collector.check() == "growth"
        del garbage
        gc.collect(0)
        for _ in range(QUIET_STREAMS + 1):
            streams.opened(None)  # the reservations end without a stream
        assert collector.check() == "lull" and passes == ["growth", "lull"]
    finally:
        gc.set_threshold(*saved)
