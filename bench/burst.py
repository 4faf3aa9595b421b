"""Bursts on a busy host (#35): bursts of new streams, each after an idle gap, into a gateway whose core is shared
with busy neighbours (processes that only spin, pinned to the same CPU). Its loop's thread then waits for the core
while it takes a burst, so shedding's CPU share is high; the question is whether it refuses chats that a burst
brought and the loop would have taken at its next turn. For chatsse's default, and the default as it was at
`--baseline REV`, interleaved: refusals per burst, and the admitted streams' TTFT p99. The default load is one a
third of the core serves (200 streams of 20 tokens 0.2 s apart: 1,000 chunks/s); 0.02 s apart it is not, and both
refuse part of it, rightly.
The gateway and its neighbours are pinned to CPU 0, this process (upstream + clients) to CPU 1.

    python bench/burst.py --baseline REV --reps 3 --out bench/results/burst
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import run_streams, start_upstream
from run import Gateway, baseline_tree, percentile

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"


def neighbours(count: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """`count` processes that spin on CPU 0 for at most `seconds` (bounded even if this process dies)."""
    return [
        subprocess.Popen(
            [sys.executable, "-c", SPIN.format(seconds=seconds)], preexec_fn=lambda: os.sched_setaffinity(0, {0})
        )
        for _ in range(count)
    ]


async def one_run(name: str, port: int, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    gateway = Gateway("chatsse", port, 1, {0}, env)
    spinning: list[subprocess.Popen[bytes]] = []
    try:
        await gateway.wait_ready()
        spinning = neighbours(args.neighbours, args.bursts * (args.gap + 10) + 10)
        refused: list[int] = []
        ttfts: list[float] = []
        lost = 0
        for _ in range(args.bursts):
            await asyncio.sleep(args.gap)  # idle: the burst meets a queue that was empty, after a quiet second
            results = await run_streams(gateway.target(), args.size, args.tokens, args.delay, 0.0)
            refused.append(sum(r.status == 503 for r in results))
            admitted = [r for r in results if r.status == 200]
            lost += sum(not (r.done and r.tokens == args.tokens) for r in admitted)
            ttfts += [r.first_at - r.sent_at for r in admitted if r.first_at is not None]
        return {
            "variant": name,
            "offered": args.bursts * args.size,
            "refused_503": sum(refused),
            "bursts_with_refusals": sum(n > 0 for n in refused),
            "refused_per_burst": refused,
            "admitted_lost": lost,
            "admitted_ttft_p99_ms": round(1000 * percentile(ttfts, 0.99), 1) if ttfts else None,
        }
    finally:
        for process in spinning:
            process.kill()
            process.wait()
        gateway.stop()


async def main(args: argparse.Namespace, baseline: Path | None) -> list[dict[str, Any]]:
    os.sched_setaffinity(0, {1})
    upstream, port = await start_upstream()
    variants: dict[str, dict[str, str]] = {"the default": {}}
    if baseline is not None:
        variants[f"the default at {args.baseline}"] = {"PYTHONPATH": str(baseline)}
    rows = []
    try:
        for rep in range(args.reps):
            for name, env in variants.items():
                started = time.perf_counter()
                row = {**await one_run(name, port, env, args), "rep": rep}
                row["seconds"] = round(time.perf_counter() - started, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        upstream.close()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200, help="streams per burst, all at once")
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--gap", type=float, default=2.0, help="idle seconds before each burst")
    parser.add_argument("--neighbours", type=int, default=2, help="spinning processes on the gateway's CPU")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds between tokens")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, interleaved")
    parser.add_argument("--baseline", metavar="REV", help="also the default as it was at this git commit")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    with baseline_tree(arguments.baseline) as checkout:
        measured = asyncio.run(main(arguments, checkout))
    if arguments.out:
        arguments.out.mkdir(parents=True, exist_ok=True)
        (arguments.out / "burst.json").write_text(
            json.dumps({"args": vars(arguments) | {"out": str(arguments.out)}, "rows": measured}, indent=1)
        )
