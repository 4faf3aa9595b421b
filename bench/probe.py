"""`chatsse serve`, with a probe for `bench/run.py --rounds`: every collector pause timed and, on SIGUSR1, a reading.

    BENCH_PROBE_OUT=/tmp/probe.json python bench/probe.py serve --port 8000

Each SIGUSR1 writes (replacing) a JSON file: the objects the cyclic collector tracks now (by generation, and the
most common types), the collections and the longest and total pause since the last reading. SIGUSR2 does the same
after a full collection, so what it counts is what the process keeps, not garbage waiting for a pass, then asks
glibc to return its free memory (`malloc_trim`) and reads RSS again: what is fragmentation, not retention. With
BENCH_PROBE_TRACE=1, tracemalloc runs from the start and each such reading also dumps a snapshot beside the file.
The gateway itself is chatsse's CLI, unchanged; the probe only adds a gc callback and the signal handlers.
"""

import ctypes
import gc
import json
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from chatsse.cli import main

OUT = Path(os.environ["BENCH_PROBE_OUT"])
pauses: list[float] = []
started = [0.0]


def on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        pauses.append(time.perf_counter() - started[0])


def reading(signum: int, frame: Any) -> None:
    since = list(pauses)
    pauses.clear()
    collected = gc.collect() if signum == signal.SIGUSR2 else None
    pauses.clear()  # a forced pass is the probe's, not the load's
    tracked = gc.get_objects()
    types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in tracked)
    result = {
        "collected": collected,
        "rss_mb": _rss_mb(),
        "tracked": len(tracked),
        "by_generation": [len(gc.get_objects(g)) for g in range(3)],
        "frozen": gc.get_freeze_count(),
        "types": dict(types.most_common(60)),
        "collections": len(since),
        "longest_pause_ms": 1000 * max(since, default=0.0),
        "total_pause_ms": 1000 * sum(since),
    }
    del tracked
    if signum == signal.SIGUSR2:  # what glibc would give back to the system now, if asked (fragmentation)
        result["pymalloc"] = _pymalloc()
        if tracemalloc.is_tracing():
            readings[0] += 1
            tracemalloc.take_snapshot().dump(str(OUT.with_name(f"snapshot{readings[0]}.bin")))
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        result["rss_after_trim_mb"] = _rss_mb()
    OUT.with_suffix(".tmp").write_text(json.dumps(result))
    OUT.with_suffix(".tmp").replace(OUT)


def _pymalloc() -> dict[str, int]:
    """CPython's small-object allocator: its arenas now, and the bytes in use in them (sys._debugmallocstats)."""
    with tempfile.TemporaryFile("w+") as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        lines = capture.read().splitlines()
    wanted = {"# arenas allocated current": "arenas", "# bytes in allocated blocks": "bytes_in_blocks"}
    found = {}
    for line in lines:
        label, _, value = line.partition("=")
        if label.strip() in wanted:
            found[wanted[label.strip()]] = int(value.strip().replace(",", ""))
    return found


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:", 1)[1].split()[0]) / 1024


readings = [0]
if os.environ.get("BENCH_PROBE_TRACE") == "1":
    tracemalloc.start(4)
gc.callbacks.append(on_gc)
signal.signal(signal.SIGUSR1, reading)
signal.signal(signal.SIGUSR2, reading)
if __name__ == "__main__":
    main(sys.argv[1:])
