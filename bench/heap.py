"""Where the memory of an open stream goes, and what the cyclic collector costs with many of them (#12).

    python bench/heap.py                 # 2000 slow streams (SLOW's shape), tracemalloc + gc pauses
    python bench/heap.py --streams 500   # smaller
    python bench/heap.py --no-trace      # RSS and gc pauses without tracemalloc's own cost

The gateway runs in a child process as `chatsse serve` runs it, with tracemalloc on and a gc callback timing
every collection; this process is the fake upstream and the load generator. A first snapshot is taken before the
load, a second while every stream is open; the difference, grouped by source line, divided by the number of open
streams, is the Python heap per stream. Prints a markdown table (top lines, gc pauses) for bench/REPORT.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Target, run_streams, start_upstream
from run import CHAT_BODY, free_port, gateway_env, rss_mb, wait_ready

TOKENS, DELAY, STAGGER, FIRST = 40, 0.25, 10.0, 0.2


def serve(out: Path) -> None:
    """The child: `chatsse serve`'s app and protocol, with tracemalloc and gc timing; SIGUSR1 writes a snapshot."""
    import gc
    import tracemalloc

    import uvicorn

    from chatsse.server.protocol import GuardedHttpProtocol

    if os.environ.get("HEAP_TRACE") == "1":
        tracemalloc.start(1)
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    snapshots = [0]

    def dump(signum: int, frame: object) -> None:
        snapshots[0] += 1
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(str(out / f"snap{snapshots[0]}.bin"))
        tracked = gc.get_objects()
        stats: dict[str, Any] = {"pauses": {g: list(p) for g, p in pauses.items()}, "tracked": len(tracked)}
        stats["types"] = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in tracked)
        del tracked
        for generation in (1, 2):  # what a pass over each older generation costs right now (timed here)
            begin = time.perf_counter()
            gc.collect(generation)
            stats[f"forced_gen{generation}_ms"] = 1000 * (time.perf_counter() - begin)
        stats["pauses_after"] = {g: list(p) for g, p in pauses.items()}  # the forced passes are not the load's
        (out / f"gc{snapshots[0]}.json").write_text(json.dumps(stats))

    signal.signal(signal.SIGUSR1, dump)
    port = int(os.environ["PORT"])
    uvicorn.run(
        "chatsse.app:factory",
        factory=True,
        host="127.0.0.1",
        port=port,
        http=GuardedHttpProtocol,
        log_level="warning",
        access_log=False,
    )


async def main(args: argparse.Namespace) -> None:
    import tracemalloc

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    upstream, upstream_port = await start_upstream()
    out = Path(tempfile.mkdtemp(prefix="chatsse-heap-"))
    port = free_port()
    env = gateway_env(upstream_port, port, CHATSSE_LOG_FORMAT="json", HEAP_TRACE="1" if args.trace else "0")
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(out)], env=env, stderr=subprocess.DEVNULL)
    try:
        target = Target("chatsse", port, "/api/v1/chat/stream", CHAT_BODY, b'"done":true')
        await wait_ready(port, "the gateway")
        await run_streams(target, 20, 2, 0.0, 0.0)  # warm every code path once
        await asyncio.sleep(0.5)
        idle = rss_mb(child.pid)
        child.send_signal(signal.SIGUSR1)
        await asyncio.sleep(1.0)
        load = asyncio.create_task(run_streams(target, args.streams, TOKENS, DELAY, STAGGER, FIRST))
        await asyncio.sleep(STAGGER + FIRST - 0.3)  # (nearly) every stream open, none finished yet
        open_streams = await active_streams(port)  # under tracemalloc the gateway lags: divide by what is open
        peak = rss_mb(child.pid)
        child.send_signal(signal.SIGUSR1)
        results = await load
        complete = sum(1 for r in results if r.done and r.tokens == TOKENS)
        await asyncio.sleep(2.0)
    finally:
        child.terminate()
        child.wait(10)
        upstream.close()
    gc_during: dict[str, Any] = json.loads((out / "gc2.json").read_text())
    gc_before: dict[str, Any] = json.loads((out / "gc1.json").read_text())
    n = open_streams
    traced = " (under tracemalloc)" if args.trace else ""
    print(
        f"{complete}/{args.streams} streams complete, {n} open at the snapshot; "
        f"RSS idle {idle:.1f} MB, then {peak:.1f} MB{traced}"
    )
    print(f"RSS per open stream: {1024 * (peak - idle) / n:.1f} KB")
    tracked = (gc_during["tracked"] - gc_before["tracked"]) / n
    print(f"objects the cyclic collector tracks, per open stream: {tracked:.0f}; the most common:\n")
    types = Counter(gc_during["types"]) - Counter(gc_before["types"])
    print("| type | per open stream |\n|---|---|")
    for name, count in types.most_common(args.top):
        print(f"| `{name}` | {count / n:.1f} |")
    print()
    print(
        f"with every stream open, a forced pass over generations 0-1 took {gc_during['forced_gen1_ms']:.1f} ms, "
        f"a full pass {gc_during['forced_gen2_ms']:.1f} ms (everything loaded at start-up is frozen)"
    )
    if args.trace:
        before = tracemalloc.Snapshot.load(str(out / "snap1.bin"))
        stats = tracemalloc.Snapshot.load(str(out / "snap2.bin")).compare_to(before, "lineno")
        print(f"Python heap per open stream: {sum(s.size_diff for s in stats) / 1024 / n:.1f} KB\n")
        by_library: Counter[str] = Counter()
        for stat in stats:
            by_library[_short(stat.traceback[0].filename).split("/")[0].removesuffix(".py")] += stat.size_diff
        print("| library | KB per open stream |\n|---|---|")
        for library, size in by_library.most_common(12):
            print(f"| {library} | {size / 1024 / n:.1f} |")
        print()
        print("| where (file:line) | bytes per open stream | objects per stream |\n|---|---|---|")
        for stat in stats[: args.top]:
            frame = stat.traceback[0]
            print(
                f"| {_short(frame.filename)}:{frame.lineno} | {stat.size_diff / n:,.0f} | {stat.count_diff / n:.1f} |"
            )
    print("\n| collector generation | collections during the load | total pause | longest pause |\n|---|---|---|---|")
    for gen in ("0", "1", "2"):
        pauses = gc_during["pauses"][gen][len(gc_before["pauses_after"][gen]) :]
        total, longest = sum(pauses), max(pauses, default=0.0)
        print(f"| {gen} | {len(pauses)} | {1000 * total:.1f} ms | {1000 * longest:.2f} ms |")


async def active_streams(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    return int(float(text.split("\nchatsse_active_streams ", 1)[1].split()[0]))


def _short(filename: str) -> str:
    for marker in ("site-packages/", "chatsse/", "python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1] if marker != "chatsse/" else "chatsse/" + filename.split(marker, 1)[1]
    return filename


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]))
    else:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--streams", type=int, default=2000)
        parser.add_argument("--top", type=int, default=25)
        parser.add_argument("--trace", action=argparse.BooleanOptionalAction, default=True, help="tracemalloc")
        asyncio.run(main(parser.parse_args()))
