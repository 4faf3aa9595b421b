"""W6, overload (#35): more streams offered than the gateway's core can serve, arriving at a steady rate (open
loop), against chatsse with shedding off (CHATSSE_MAX_LOOP_LAG_MS=0) and on (the default, and a tighter bound).
For each: how many were admitted and refused, how fast a refusal came, the admitted streams' added TTFT and gap
p99, whether any admitted stream was lost, and the gateway's peak RSS. The gateway is pinned to CPU 0, this
process (upstream + clients) to CPU 1, as in bench/run.py.

    python bench/overload.py                          # 6,000 streams over 20 s, 100 tokens at 40 ms each
    python bench/overload.py --streams 3000 --out bench/results/overload
    python bench/overload.py --others --out bench/results/overload   # + the stack floor and the seed-style peer
    python bench/overload.py --variants "lag, or CPU 80% with connections waiting" --baseline REV --reps 3
    python bench/overload.py --variants "lag, or CPU 80% with connections waiting" --workers 2 --streams 12000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import StreamResult, run_streams, start_upstream
from run import Gateway, baseline_tree, cpu_seconds, peak_rss_mb, percentile, tree

# name: (CHATSSE_MAX_LOOP_LAG_MS, CHATSSE_MAX_CPU_PERCENT)
VARIANTS = {
    "no shedding": ("0", "0"),
    "lag 500 ms only": ("500", "0"),
    "lag, or CPU 80% with connections waiting": ("500", "80"),
    "lag, or CPU 90% with connections waiting": ("500", "90"),
}


def summary(results: list[StreamResult], tokens: int, delay: float, wall: float) -> dict[str, Any]:
    refused = [r for r in results if r.status == 503]
    admitted = [r for r in results if r.status == 200]
    complete = [r for r in admitted if r.done and r.tokens == tokens]
    ttft = [r.first_at - r.sent_at for r in admitted if r.first_at is not None]
    gaps = [b - a - delay for r in admitted for a, b in zip(r.token_times, r.token_times[1:], strict=False)]
    waits = [r.answered_at - r.sent_at for r in refused if r.answered_at is not None]
    return {
        "offered": len(results),
        "admitted": len(admitted),
        "refused_503": len(refused),
        "other": len(results) - len(admitted) - len(refused),
        "admitted_lost": len(admitted) - len(complete),
        "ttft_p99_added_ms": round(1000 * percentile(ttft, 0.99), 1) if ttft else None,
        "gap_p99_added_ms": round(1000 * percentile(gaps, 0.99), 1) if gaps else None,
        "refusal_p50_ms": round(1000 * percentile(waits, 0.5), 1) if waits else None,
        "refusal_p99_ms": round(1000 * percentile(waits, 0.99), 1) if waits else None,
        "seconds": round(wall, 1),
    }


async def main(args: argparse.Namespace, baseline: Path | None) -> list[dict[str, Any]]:
    # One worker: the gateway on CPU 0, this process on CPU 1. More: the workers and this process share every CPU.
    cpus = {0} if args.workers == 1 else set(range(os.cpu_count() or 2))
    os.sched_setaffinity(0, {1} if args.workers == 1 else cpus)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    upstream, upstream_port = await start_upstream()
    rows = []
    try:
        # The others under the same load: the bare stack (uvicorn, Starlette, httpx) relaying the same bytes, and a
        # relay as the seed sketches it; neither sheds.
        others = {"stack floor": ("stack-floor", {}), "seed-style peer": ("peer", {})} if args.others else {}
        runs = {
            **{
                name: ("chatsse", {"CHATSSE_MAX_LOOP_LAG_MS": lag, "CHATSSE_MAX_CPU_PERCENT": cpu})
                for name, (lag, cpu) in VARIANTS.items()
                if not args.variants or name in args.variants
            },
            **others,
        }
        if baseline is not None:  # the default, as it was at that commit (before and after in one run)
            runs[f"the default at {args.baseline}"] = ("chatsse", {"PYTHONPATH": str(baseline)})
        for rep, (name, (kind, bounds)) in ((r, item) for r in range(args.reps) for item in runs.items()):
            gateway = Gateway(kind, upstream_port, args.workers, cpus, bounds)
            try:
                await gateway.wait_ready()
                cpu_before, started, own_before = cpu_seconds(gateway.pid), time.perf_counter(), time.process_time()
                each_before = {pid: cpu_seconds(pid) for pid in tree(gateway.pid)}
                results = await run_streams(gateway.target(), args.streams, args.tokens, args.delay, args.stagger)
                wall = time.perf_counter() - started
                row = {"variant": name, "rep": rep, **summary(results, args.tokens, args.delay, wall)}
                row["gateway_cpu_pct"] = round(100 * (cpu_seconds(gateway.pid) - cpu_before) / wall)
                row["harness_cpu_pct"] = round(100 * (time.process_time() - own_before) / wall)  # upstream, clients
                row["workers"] = args.workers
                if args.workers > 1:  # how evenly the workers shared the load (the master's own share is ~0)
                    each = [cpu_seconds(pid) - used for pid, used in each_before.items() if pid != gateway.pid]
                    row["worker_cpu_pct"] = [round(100 * used / wall) for used in each]
                row["peak_rss_mb"] = round(peak_rss_mb(gateway.pid))
                rows.append(row)
                print(json.dumps(row), flush=True)
            finally:
                gateway.stop()
    finally:
        upstream.close()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=6000)
    parser.add_argument("--stagger", type=float, default=20.0, help="seconds over which the streams arrive")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.04)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--variants", nargs="*", choices=sorted(VARIANTS), help="only these of chatsse's variants")
    parser.add_argument("--workers", type=int, default=1, help="WEB_CONCURRENCY (more than 1: no pinning)")
    parser.add_argument("--reps", type=int, default=1, help="repetitions, interleaved")
    parser.add_argument("--baseline", metavar="REV", help="also the default as it was at this git commit")
    parser.add_argument("--others", action="store_true", help="also the stack floor and the seed-style peer")
    arguments = parser.parse_args()
    with baseline_tree(arguments.baseline) as checkout:
        measured = asyncio.run(main(arguments, checkout))
    if arguments.out:
        arguments.out.mkdir(parents=True, exist_ok=True)
        (arguments.out / "overload.json").write_text(
            json.dumps({"args": vars(arguments) | {"out": str(arguments.out)}, "rows": measured}, indent=1)
        )
