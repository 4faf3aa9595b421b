"""Soak test: many streams for a bounded time, with random client disconnects and random upstream faults.

    python bench/soak.py                    # 2 minutes, 50 concurrent clients (the long run)
    python bench/soak.py --seconds 10       # the short run CI does (tests/test_soak.py)
    python bench/soak.py --multi            # three upstreams: one rate-limited at random, one dropping, one healthy
    python bench/soak.py --cluster          # three instances behind nginx on a Redis Cluster, killed at random
                                            # (bench/soak_cluster.py)

A real `chatsse serve` process talks to the built-in simulator. Every stream must end with `done` or an `error`
event (or an HTTP error before it started), unless this client hung up on purpose. Afterwards the gateway must
hold no streams, its open file descriptors must be back near the baseline, and its RSS must not have grown.
With --multi, every failure an upstream served must appear in the gateway's per-upstream metrics (no failover
went uncounted), and the prompts carry no status faults of their own. Prints a summary; exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chatsse.simulator import Simulator
from chatsse.sse import SSEDecoder

MID_STREAM_FAULTS = [
    "",
    "",
    "",
    "[sim: cut_after=3]",
    "[sim: malformed_after=2]",
    "[sim: error_after=2]",
    "[sim: no_done=1]",
    "[sim: finish=length]",
]
# Three upstreams of one model group: what each does to every request, on top of the prompt's own directives.
MULTI_UPSTREAMS = (
    ("ptu", 0, "status=429 retry_after_ms=200 chance=0.4"),
    ("dropping", 0, "drop=1 chance=0.3"),
    ("healthy", 1, ""),
)
# One upstream: the prompts also fail before the first token (and go silent mid-stream).
FAULTS = [
    *MID_STREAM_FAULTS,
    "[sim: status=500]",
    "[sim: status=429 retry_after_ms=5]",
    "[sim: status=503 times=1]",
    "[sim: silence_after=2 silence=3]",  # the gateway's upstream timeout (1 s) ends it
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one_stream(
    client: httpx.AsyncClient, url: str, rng: random.Random, outcomes: Counter[str], faults: list[str] = FAULTS
) -> None:
    words = " ".join(f"w{rng.randrange(1000)}" for _ in range(rng.randrange(3, 30)))
    fault = rng.choice(faults)
    hang_up_after = rng.randrange(1, 6) if rng.random() < 0.15 else None
    message = f"echo:{words}[sim: delay={rng.choice([0, 0.001, 0.005])}]{fault}"
    try:
        async with client.stream("POST", url, json={"message": message}) as response:
            if response.status_code != 200:
                await response.aread()
                outcomes[f"http_{response.status_code}"] += 1
                return
            decoder, seen, last = SSEDecoder(), 0, None
            async for raw in response.aiter_bytes():
                for event in decoder.decode(raw):
                    last = json.loads(event.data)
                    seen += 1
                if hang_up_after is not None and seen >= hang_up_after:
                    outcomes["client_hung_up"] += 1
                    return
        if last is not None and last.get("done"):
            outcomes["done"] += 1
        elif last is not None and "error" in last:
            outcomes["error_event"] += 1
        else:
            outcomes["VIOLATION_no_terminal_event"] += 1
    except httpx.HTTPError as exc:
        outcomes[f"VIOLATION_{type(exc).__name__}"] += 1


def start_upstreams(multi: bool, workdir: Path) -> tuple[list[Simulator], dict[str, str]]:
    """The simulators, and the environment that points a gateway at them."""
    if not multi:
        simulator = Simulator()
        simulator.start_in_thread()
        env = {"AZURE_OPENAI_ENDPOINT": simulator.url, "AZURE_OPENAI_API_KEY": "soak"}
        return [simulator], {**env, "AZURE_OPENAI_DEPLOYMENT_NAME": "soak"}
    simulators, tables = [], []
    for name, priority, always in MULTI_UPSTREAMS:
        simulator = Simulator(api_key="soak", always=always)
        simulator.start_in_thread()
        simulators.append(simulator)
        tables.append(
            f'[[upstream]]\nname = "{name}"\nendpoint = "{simulator.url}"\ndeployment = "soak"\n'
            f'api_key_env = "SOAK_KEY"\npriority = {priority}\n'
        )
    config = workdir / "soak-upstreams.toml"
    config.write_text("\n".join(tables))
    return simulators, {"CHATSSE_CONFIG": str(config), "SOAK_KEY": "soak"}


def failovers(metrics: str) -> str:
    """Attempts per upstream and outcome, as the gateway counted them."""
    found = re.findall(
        r'^chatsse_upstream_requests_total\{outcome="([^"]+)",upstream="([^"]+)"\} (\S+)$', metrics, re.M
    )
    return ", ".join(f"{upstream}:{outcome} {float(count):.0f}" for outcome, upstream, count in sorted(found))


def upstream_failures_counted(metrics: str) -> int:
    """The failed upstream attempts the gateway counted (chatsse_upstream_requests_total, outcome not ok)."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("chatsse_upstream_requests_total{") and 'outcome="ok"' not in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def soak(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="chatsse-soak-"))
    simulators, upstream_env = start_upstreams(args.multi, workdir)
    faults = MID_STREAM_FAULTS if args.multi else FAULTS
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_OPENAI", "CHATSSE_"))},
        **upstream_env,
        "CHATSSE_UPSTREAM_TIMEOUT": "1",
        "CHATSSE_MAX_RETRY_WAIT": "1",
        "CHATSSE_LOG_FORMAT": "json",
    }
    chatsse = str(Path(sys.executable).with_name("chatsse"))
    gateway = subprocess.Popen(
        [chatsse, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    try:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=None)) as client:
            for _ in range(200):
                try:
                    if (await client.get(base + "/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
            # Warm up, then take the baseline the end is compared with.
            stream_url = base + "/api/v1/chat/stream"
            await asyncio.gather(*(one_stream(client, stream_url, rng, Counter(), faults) for _ in range(50)))
            await asyncio.sleep(0.5)
            baseline_fds, baseline_rss = fds(gateway.pid), rss_mb(gateway.pid)
            deadline = time.monotonic() + args.seconds
            started = 0

            async def worker() -> None:
                nonlocal started
                while time.monotonic() < deadline and started < args.max_streams:
                    started += 1
                    await one_stream(client, stream_url, rng, outcomes, faults)

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            await asyncio.sleep(1.5)  # the gateway's upstream timeout is 1 s: let hung-up streams unwind
            metrics = (await client.get(base + "/metrics")).text
        active = next(line for line in metrics.splitlines() if line.startswith("chatsse_active_streams "))
        end_fds, end_rss = fds(gateway.pid), rss_mb(gateway.pid)
        if float(active.split()[1]) != 0:
            problems.append(f"streams still open in the gateway: {active}")
        if end_fds > baseline_fds + args.concurrency + 10:  # idle pooled upstream connections may stay
            problems.append(f"file descriptors grew from {baseline_fds} to {end_fds}")
        if end_rss > baseline_rss + args.rss_slack:
            problems.append(f"RSS grew from {baseline_rss:.0f} MB to {end_rss:.0f} MB")
        problems += [f"{count} x {name}" for name, count in outcomes.items() if name.startswith("VIOLATION")]
        served, counted = sum(s.failures for s in simulators), upstream_failures_counted(metrics)
        if args.multi:
            print(f"soak: upstream failures served {served}, counted by the gateway {counted}; {failovers(metrics)}")
            if served != counted or served == 0:
                problems.append(f"upstream failures served ({served}) and counted ({counted}) differ")
        total = sum(outcomes.values())
        print(
            f"soak: {total} streams in {args.seconds:.0f}s with {args.concurrency} clients: "
            + ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items()))
        )
        print(f"soak: gateway fds {baseline_fds} -> {end_fds}, RSS {baseline_rss:.0f} -> {end_rss:.0f} MB, {active}")
        if total == 0:
            problems.append("no streams ran")
    finally:
        gateway.send_signal(signal.SIGINT)
        gateway.wait(15)
        for simulator in simulators:
            simulator.stop_thread()
        shutil.rmtree(workdir, ignore_errors=True)
    for problem in problems:
        print(f"soak: FAILED: {problem}", file=sys.stderr)
    print("soak: OK" if not problems else "soak: FAILED")
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120, help="how long to run (default 120)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--max-streams", type=int, default=200_000, help="stop after this many streams")
    parser.add_argument("--rss-slack", type=float, default=15, help="allowed RSS growth in MB (default 15)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--multi", action="store_true", help="three upstreams with failover instead of one")
    parser.add_argument(
        "--cluster", action="store_true", help="three instances behind nginx on a Redis Cluster, with random kills"
    )
    args = parser.parse_args()
    if args.cluster:
        from bench import soak_cluster  # its own setup: nginx, six Redis nodes

        raise SystemExit(asyncio.run(soak_cluster.soak(args)))
    raise SystemExit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
