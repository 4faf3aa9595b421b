"""Benchmark chatsse against the upstream itself and a seed-style peer, in the same run.

    python bench/run.py            # full: W1/W2/W3 x 3 interleaved repetitions, + peer, + WEB_CONCURRENCY=2
    python bench/run.py --quick    # a smoke run in well under a minute (CI): completion and correctness only
                                   # (its gateways do not shed: --shedding to have them)
    python bench/run.py --scale --reps 0 --profile /tmp/prof   # + SLOW, SHORT; py-spy stacks for bench/stacks.py
    python bench/run.py --baseline ae3dbd2 --failover --no-peer --no-workers2 --out bench/results/upstreams
                                   # + the gateway at another commit, + a two-upstream gateway whose first answers 429
    python bench/run.py --baseline 490ad9f --faces --no-peer --no-workers2 --out bench/results/faces
                                   # + W1 through the OpenAI and useChat faces, for chatsse and the baseline
                                   # (--workloads W1 --reps 7: only those, more repetitions)
    python bench/run.py --faces --responses-upstream --workloads W1 --reps 5 --no-peer --no-workers2 \
        --out bench/results/responses   # #30: every face, /v1/responses included, over a chat and a Responses upstream
    python bench/run.py --resume --cluster --workloads W1 --reps 5 --no-peer --no-workers2 --out bench/results/cluster
                                   # + resume on: in the process, on one Redis, on a 3-primary Redis Cluster
    python bench/run.py --callers --workloads W1 --scale --scale-targets direct chatsse callers callers-redis \
        --no-peer --no-workers2 --out bench/results/callers   # + a caller with every limit, in memory and on Redis,
                                                              # and a keyed caller and its team with budgets (Redis)
    python bench/run.py --guards --workloads W1 --reps 5 --no-peer --no-workers2 --out bench/results/guards
                                   # #34: + a pii guard on every reply's output, as it streams
    python bench/run.py --rounds 10 --floors --baseline REV --workloads W1 --scale --short-only \
        --scale-targets chatsse baseline stack-floor asgi-floor --scale-reps 3 --no-peer --no-workers2 \
        --out bench/results/drift   # #23: 10 rounds of W1, SLOW, SHORT in one process (x3), + the two floors

The gateway under test is a real process started as the Procfile starts it, pinned to CPU 0; this process
(fake upstream + load generator) is pinned to CPU 1. Writes <out>/<mode>.json and <out>/<mode>.md (full or
quick; bench/REPORT.md quotes them). Exits 1 if any stream was incomplete or lost tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    RESPONSES_TOKEN,
    TOKEN,
    StreamResult,
    Target,
    run_closed_loop,
    run_streams,
    start_rate_limited_upstream,
    start_upstream,
)

from chatsse.server.memory import CHECK_SECONDS, SETTLE_SECONDS

BENCH = Path(__file__).resolve().parent
PEER_VENV = BENCH / ".venv-peer"
FULL = {"W1": (200, 200, 0.02, 1.0), "W2": (16, 2000, 0.0, 0.0), "W3": (20, 200, 0.02, 0.5)}
QUICK = {"W1": (20, 50, 0.02, 0.2), "W2": (4, 500, 0.0, 0.0), "W3": (5, 50, 0.02, 0.1)}
# At scale (#12), with --scale: many slow streams (streams, tokens, s/token, arrivals over s, first token after s),
# and short replies (clients, total streams, tokens), each on a new connection.
SLOW = (2000, 40, 0.25, 10.0, 0.2)
SHORT = (32, 4000, 5)
QUICK_SLOW, QUICK_SHORT = (100, 5, 0.05, 0.5, 0.05), (8, 200, 5)  # --quick --scale: the same shapes, small
# With --many: 10,000 streams open at once in one process, arriving at SLOW's rate, each lasting past the last arrival.
MANY = (10_000, 40, 1.5, 50.0, 0.2)
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHAT_BODY = '{"message":"{message}"}'
# With --faces: W1 through the other protocols too (path, body, the end of a stream, what counts one token).
FACES = {
    "openai": (
        "/v1/chat/completions",
        '{"model":"default","stream":true,"messages":[{"role":"user","content":"{message}"}]}',
        b"data: [DONE]",
        TOKEN.encode(),
    ),
    "useChat": (
        "/api/v1/chat/ui",
        '{"id":"bench","messages":[{"id":"u","role":"user","parts":[{"type":"text","text":"{message}"}]}]}',
        b"data: [DONE]",
        TOKEN.encode(),
    ),
    "responses": (
        "/v1/responses",
        '{"model":"default","stream":true,"input":"{message}"}',
        b"event: response.completed",
        RESPONSES_TOKEN,  # its closing events repeat the whole text
    ),
}
# With --responses-upstream: chatsse and its faces again over an upstream speaking the Responses API.
RESPONSES_UPSTREAM = {"AZURE_OPENAI_PROTOCOL": "responses"}
FACE_WORKLOADS = ("W1",)
# With --floors (#23): the limit of chatsse's own stack, and of a bare ASGI relay on uvicorn (bench/floor_*.py).
FLOORS = {"stack-floor": "floor_stack:app", "asgi-floor": "floor_asgi:app"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree(pid: int) -> list[int]:
    """The process and its descendants, whichever of its threads started them (a child started from a worker
    thread is listed under that thread's task, not the main one's)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    children = []
    for task in tasks:
        with contextlib.suppress(OSError):
            children += (task / "children").read_text().split()
    return [pid, *(p for child in children for p in tree(int(child)))]


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def _status_kb(pid: int, field: str) -> list[int]:
    """A /proc status field (in kB) of the process and each of its children."""
    values = []
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field):
                    values.append(int(line.split()[1]))
        except OSError:
            continue
    return values


def peak_rss_mb(pid: int) -> float:
    return max(_status_kb(pid, "VmHWM:"), default=0) / 1024


def rss_mb(pid: int) -> float:
    return sum(_status_kb(pid, "VmRSS:")) / 1024


def ensure_peer() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print("installing the seed-style peer (fastapi, openai, uvicorn) in bench/.venv-peer ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "fastapi", "openai", "uvicorn[standard]"], check=True
        )
    return python


# Every chatsse gateway's settings under its own: with --no-shedding (--quick's default), shedding off, since a
# smoke run checks completeness on a machine busy with other things, where one stall refused a whole face's streams.
GATEWAY_DEFAULTS: dict[str, str] = {}
NO_SHEDDING = {"CHATSSE_MAX_LOOP_LAG_MS": "0", "CHATSSE_MAX_CPU_PERCENT": "0"}


def gateway_env(upstream_port: int, port: int, **extra: str) -> dict[str, str]:
    """This environment without chatsse or Azure settings, plus a gateway's: the bench upstream, its port, `extra`."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_OPENAI", "CHATSSE_"))},
        "AZURE_OPENAI_ENDPOINT": f"http://127.0.0.1:{upstream_port}",
        "AZURE_OPENAI_API_KEY": "bench",
        "AZURE_OPENAI_DEPLOYMENT_NAME": "bench",
        "PORT": str(port),
        **GATEWAY_DEFAULTS,
        **extra,
    }


async def wait_ready(port: int, name: str) -> None:
    """Until the gateway on `port` answers /health with 200 (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            ok = (await reader.read(100)).startswith(b"HTTP/1.1 200")
            writer.close()
            if ok:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{name} did not start")


class Gateway:
    """A gateway process pinned to its CPUs; `pid` for /proc readings."""

    def __init__(
        self,
        name: str,
        upstream_port: int,
        workers: int,
        cpus: set[int],
        extra_env: dict[str, str] | None = None,
        probe: Path | None = None,
    ) -> None:
        self.name, self.port, self.probe = name, free_port(), probe
        self.bearer = (extra_env or {}).get("BENCH_CALLER_KEY")  # its clients are that [[caller]]
        env = gateway_env(upstream_port, self.port, WEB_CONCURRENCY=str(workers), **(extra_env or {}))
        if name == "peer" or name in FLOORS:
            python, module = (ensure_peer(), "peer_app:app") if name == "peer" else (Path(sys.executable), FLOORS[name])
            command = [str(python), "-m", "uvicorn", module, "--app-dir", str(BENCH), "--no-access-log"]
            command += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        elif probe is not None:  # chatsse serve, with bench/probe.py's gc readings on SIGUSR1
            command = [sys.executable, str(BENCH / "probe.py"), "serve", "--host", "127.0.0.1"]
            command += ["--port", str(self.port)]
            env["BENCH_PROBE_OUT"] = str(probe)
        else:  # as the Procfile does: chatsse serve --port $PORT (WEB_CONCURRENCY workers)
            command = [str(Path(sys.executable).with_name("chatsse")), "serve", "--host", "127.0.0.1"]
            command += ["--port", str(self.port)]
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        self.pid = self.process.pid

    async def wait_ready(self) -> None:
        await wait_ready(self.port, self.name)

    async def reading(self, collect: bool = False) -> dict[str, Any]:
        """bench/probe.py's reading of the collector (only for a gateway started with `probe`); `collect`: after a
        full collection, so that it counts only what the process keeps."""
        assert self.probe is not None
        before = self.probe.stat().st_mtime_ns if self.probe.exists() else 0
        self.process.send_signal(signal.SIGUSR2 if collect else signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.probe.exists() and self.probe.stat().st_mtime_ns != before:
                return dict(json.loads(self.probe.read_text()))
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} wrote no probe reading")

    def target(self) -> Target:
        marker = b'"done": true' if self.name == "peer" else b'"done":true'
        return Target(self.name, self.port, "/api/v1/chat/stream", CHAT_BODY, marker, bearer=self.bearer)

    def face_target(self, face: str) -> Target:
        path, body, marker, token = FACES[face]
        return Target(f"{self.name} {face}", self.port, path, body, marker, token)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def baseline_tree(revision: str | None) -> Iterator[Path | None]:
    """A temporary git worktree of `revision` (None: nothing)."""
    if revision is None:
        yield None
        return
    tree = Path(tempfile.mkdtemp(prefix="chatsse-baseline-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], check=True, cwd=BENCH.parent)
    try:
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False, cwd=BENCH.parent)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(results: list[StreamResult], tokens: int) -> dict[str, Any]:
    ok = [r for r in results if r.done and r.tokens == tokens]
    chunks = sum(r.tokens for r in results)
    start = min(r.sent_at for r in results)
    end = max((r.token_times[-1] for r in results if r.token_times), default=start)
    gaps = [b - a for r in results for a, b in zip(r.token_times, r.token_times[1:], strict=False)]
    return {
        "streams": len(results),
        "complete": len(ok),
        "incomplete": len(results) - len(ok),
        "errors": sorted({r.error for r in results if r.error}),
        "refused": sum(1 for r in results if r.status == 503),  # shed: 503 overloaded
        "chunks": chunks,
        "expected_chunks": len(results) * tokens,
        "seconds": end - start,
        "chunks_per_s": chunks / (end - start) if end > start else float("nan"),
        "ttft_p50_ms": 1000 * percentile([r.first_at - r.sent_at for r in results if r.first_at], 0.5),
        "ttft_p99_ms": 1000 * percentile([r.first_at - r.sent_at for r in results if r.first_at], 0.99),
        "gap_p99_ms": 1000 * percentile(gaps, 0.99),
    }


async def run_workload(target: Target, spec: tuple[int, int, float, float], gateway: Gateway | None) -> dict[str, Any]:
    streams, tokens, delay, stagger = spec
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = cpu_seconds(gateway.pid) if gateway else 0.0
    started = time.perf_counter()
    results = await run_streams(target, streams, tokens, delay, stagger)
    wall = time.perf_counter() - started
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    row = measure(results, tokens)
    harness_cpu = (own_after.ru_utime - own_before.ru_utime) + (own_after.ru_stime - own_before.ru_stime)
    row["harness_cpu_pct"] = 100 * harness_cpu / wall
    if gateway:
        gateway_cpu = cpu_seconds(gateway.pid) - cpu_before
        row["gateway_cpu_s"] = gateway_cpu
        row["gateway_cpu_pct"] = 100 * gateway_cpu / wall
        row["cpu_s_per_1k_chunks"] = gateway_cpu / (row["chunks"] / 1000) if row["chunks"] else float("nan")
        row["peak_rss_mb"] = peak_rss_mb(gateway.pid)
    return row


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    workloads = QUICK if args.quick else FULL
    workloads = {name: spec for name, spec in workloads.items() if name in (args.workloads or workloads)}
    upstream, upstream_port = await start_upstream()
    direct = Target(
        "direct",
        upstream_port,
        "/openai/deployments/bench/chat/completions?api-version=2024-10-21",
        '{"messages":[{"role":"user","content":"{message}"}],"stream":true}',
        b"[DONE]",
    )
    names = ["direct", "chatsse", *(["peer"] if args.peer else []), *(FLOORS if args.floors else [])]
    extra_env: dict[str, dict[str, str]] = {}
    if args.baseline:
        # The gateway as it was at another commit, on the same dependencies: imported from a worktree of it.
        names.append("baseline")
        extra_env["baseline"] = {"PYTHONPATH": str(args.baseline_tree)}
    redis_server, redis_port = None, free_port()
    if args.resume or args.callers:
        # A redis-server pinned with the harness.
        redis_server = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, {1}),
        )
        await asyncio.sleep(0.5)
    if args.callers:
        # Every request from a caller with every limit set (none reached): counted in the process, then on Redis.
        names += ["callers", "callers-redis"]
        args.out.mkdir(parents=True, exist_ok=True)
        config = args.out / "callers.toml"
        config.write_text(
            f'quotas_in_memory = true\n\n[[upstream]]\nname = "bench"\nendpoint = "http://127.0.0.1:{upstream_port}"\n'
            'deployment = "bench"\napi_key_env = "BENCH_KEY"\n\n[anonymous]\nrequests_per_minute = 100000000\n'
            'tokens_per_minute = 100000000000\ntoken_quota = 100000000000000\nquota_period = "month"\n'
            "max_streams = 1000000\nmax_tokens = 100000\n"
        )
        limited = {"CHATSSE_CONFIG": str(config), "BENCH_KEY": "bench", "AZURE_OPENAI_ENDPOINT": ""}
        extra_env["callers"] = limited
        extra_env["callers-redis"] = {**limited, "CHATSSE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
        # A keyed caller in a team, both with budgets in money (priced replies) besides the caller's other limits.
        names.append("budgets-redis")
        budgets = args.out / "budgets.toml"
        budgets.write_text(
            f'[[upstream]]\nname = "bench"\nendpoint = "http://127.0.0.1:{upstream_port}"\ndeployment = "bench"\n'
            'api_key_env = "BENCH_KEY"\nprice = "gpt-4o"\n\n[[price]]\nmodel = "gpt-4o"\ninput = 2.5\noutput = 10\n\n'
            '[[caller]]\nname = "bench"\nkey_env = "BENCH_CALLER_KEY"\nrequests_per_minute = 100000000\n'
            "tokens_per_minute = 100000000000\nmax_streams = 1000000\nbudget = 1000000000\n"
            'budget_period = "month"\nalert_at = [0.5]\n\n[[team]]\nname = "benchers"\nmembers = ["bench"]\n'
            'budget = 1000000000\nbudget_period = "month"\ntoken_quota = 100000000000000\nquota_period = "month"\n'
        )
        extra_env["budgets-redis"] = {
            **limited,
            "CHATSSE_CONFIG": str(budgets),
            "BENCH_CALLER_KEY": "bench-caller-key",
            "CHATSSE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        }
    if args.guards:
        # #34: a pii guard (every built-in detector) on the output of every reply, as it streams.
        names.append("guards")
        args.out.mkdir(parents=True, exist_ok=True)
        config = args.out / "guards.toml"
        config.write_text(
            f'guards = ["pii"]\n\n[[upstream]]\nname = "bench"\nendpoint = "http://127.0.0.1:{upstream_port}"\n'
            'deployment = "bench"\napi_key_env = "BENCH_KEY"\n\n[[guard]]\nname = "pii"\nkind = "pii"\non = "output"\n'
        )
        extra_env["guards"] = {"CHATSSE_CONFIG": str(config), "BENCH_KEY": "bench", "AZURE_OPENAI_ENDPOINT": ""}
        # And a content_safety guard on output: a window of 100 characters (the bench's tokens end no sentence), one
        # text:analyze call each, answered by the bench upstream after ANALYZE_SECONDS.
        names.append("guards-safety")
        safety = args.out / "guards-safety.toml"
        safety.write_text(
            f'guards = ["safety"]\n\n[[upstream]]\nname = "bench"\nendpoint = "http://127.0.0.1:{upstream_port}"\n'
            'deployment = "bench"\napi_key_env = "BENCH_KEY"\n\n[[guard]]\nname = "safety"\nkind = "content_safety"\n'
            f'on = "output"\nendpoint = "http://127.0.0.1:{upstream_port}"\nkey_env = "BENCH_KEY"\nhold_back = 100\n'
        )
        extra_env["guards-safety"] = {**extra_env["guards"], "CHATSSE_CONFIG": str(safety)}
    if args.resume:
        # Resume on: replies kept in the process, and kept on Redis too.
        names += ["resume", "resume-redis"]
        extra_env["resume"] = {"CHATSSE_RESUME_SECONDS": "60"}
        extra_env["resume-redis"] = {
            "CHATSSE_RESUME_SECONDS": "60",
            "CHATSSE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        }
    if args.responses_upstream:
        names.append("responses-upstream")
        extra_env["responses-upstream"] = RESPONSES_UPSTREAM
    for variant in args.variant or []:
        # chatsse with some environment of its own: `NAME=KEY=VALUE,KEY=VALUE`
        name, _, assignments = variant.partition("=")
        names.append(name)
        extra_env[name] = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
        if name.startswith("baseline") and args.baseline:  # a variant of the baseline: its code, this environment
            extra_env[name] = {**extra_env["baseline"], **extra_env[name]}
    sink = None
    if args.tracing:
        # Tracing on, every request sampled, exported to a local OTLP/HTTP sink pinned with the harness.
        sink_port = free_port()
        sink = subprocess.Popen(
            [sys.executable, str(BENCH / "otlp_sink.py"), str(sink_port)],
            preexec_fn=lambda: os.sched_setaffinity(0, {1}),
        )
        await asyncio.sleep(0.5)
        names.append("tracing")
        extra_env["tracing"] = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
            "OTEL_TRACES_SAMPLER": "always_on",
        }
        if args.baseline:  # the baseline's tracing too: what this commit changed in tracing's cost
            names.append("baseline-tracing")
            extra_env["baseline-tracing"] = {**extra_env["baseline"], **extra_env["tracing"]}
    cluster = None
    if args.cluster:
        # The same, on a Redis Cluster of three primaries, pinned with the harness like the single Redis.
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.redis_server import RedisClusterNodes

        cluster = RedisClusterNodes(Path(tempfile.mkdtemp(prefix="chatsse-bench-cluster-")), primaries=3)
        cluster.start()
        for process in cluster.processes.values():
            os.sched_setaffinity(process.pid, {1})
        names.append("resume-cluster")
        extra_env["resume-cluster"] = {"CHATSSE_RESUME_SECONDS": "60", "CHATSSE_REDIS_URL": cluster.url}
    if args.failover:
        limited, limited_port = await start_rate_limited_upstream()
        names.append("failover")
        config = args.out / "failover-upstreams.toml"
        args.out.mkdir(parents=True, exist_ok=True)
        config.write_text(
            f'[[upstream]]\nname = "first"\nendpoint = "http://127.0.0.1:{limited_port}"\ndeployment = "bench"\n'
            'api_key_env = "BENCH_KEY"\npriority = 0\n\n'
            f'[[upstream]]\nname = "second"\nendpoint = "http://127.0.0.1:{upstream_port}"\ndeployment = "bench"\n'
            'api_key_env = "BENCH_KEY"\npriority = 1\n'
        )
        extra_env["failover"] = {"CHATSSE_CONFIG": str(config), "BENCH_KEY": "bench", "AZURE_OPENAI_ENDPOINT": ""}
    runs: list[dict[str, Any]] = []
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]  # interleave: each target goes first once
        for name in order:
            gateway = None if name == "direct" else Gateway(name, upstream_port, 1, {0}, extra_env.get(name))
            if gateway:
                await gateway.wait_ready()
            target = gateway.target() if gateway else direct
            try:
                for workload, spec in workloads.items():
                    with profiled(gateway, args.profile and args.profile / f"{name}-{workload}-{rep}.txt"):
                        row = await run_workload(target, spec, gateway)
                    runs.append({"rep": rep, "target": name, "workload": workload, "workers": 1, **row})
                    print(f"rep {rep} {name:8} {workload}: {summary_line(row)}", flush=True)
                faces = FACES if args.faces and name in ("chatsse", "baseline", "responses-upstream") else {}
                for face in faces:
                    assert gateway is not None
                    for workload in (w for w in FACE_WORKLOADS if w in workloads):
                        row = await run_workload(gateway.face_target(face), workloads[workload], gateway)
                        runs.append({"rep": rep, "target": f"{name} {face}", "workload": workload, "workers": 1, **row})
                        print(f"rep {rep} {name} {face} {workload}: {summary_line(row)}", flush=True)
            finally:
                if gateway:
                    gateway.stop()
    scale: list[dict[str, Any]] = []
    scale_names = args.scale_targets or (
        "direct",
        "chatsse",
        *(["peer"] if args.peer else []),
        *(["baseline"] if args.baseline else []),
        *(FLOORS if args.floors else []),
    )
    for rep in range(args.scale_reps if args.scale else 0):
        for name in scale_names[rep % len(scale_names) :] + scale_names[: rep % len(scale_names)]:
            gateway = None if name == "direct" else Gateway(name, upstream_port, 1, {0}, extra_env.get(name))
            if gateway:
                await gateway.wait_ready()
            try:
                target = gateway.target() if gateway else direct
                rows = await run_scale(target, gateway, name, args.profile, args.quick, args.short_only)
                scale += [{**row, "rep": rep} for row in rows]
            finally:
                if gateway:
                    gateway.stop()
    rounds = []
    for name in args.rounds_targets if args.rounds else []:
        rounds += await run_rounds(args, upstream_port, direct, name, extra_env.get(name))
    if args.many:
        # Each stream is two sockets in the gateway (client, upstream) and two here: the file limit bounds it.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        streams = min(MANY[0], (soft - 200) // 2)
        if streams < MANY[0]:
            print(f"MANY: {streams} streams, not {MANY[0]}: the hard file limit is {hard} (2 sockets per stream)")
        gateway = Gateway("chatsse", upstream_port, 1, {0})
        await gateway.wait_ready()
        try:
            row = await run_slow(gateway.target(), gateway, "chatsse", "MANY", (streams, *MANY[1:]))
            scale.append({**row, "file_limit": soft})
        finally:
            gateway.stop()
    if args.workers2:
        for workers, cpus in ((1, {0}), (2, {0, 1})):
            gateway = Gateway("chatsse", upstream_port, workers, cpus)
            await gateway.wait_ready()
            try:
                row = await run_workload(gateway.target(), workloads["W1"], gateway)
            finally:
                gateway.stop()
            runs.append({"rep": 0, "target": "chatsse", "workload": "W1", "workers": workers, "scaling": True, **row})
            print(f"WEB_CONCURRENCY={workers} chatsse W1: {summary_line(row)}", flush=True)
    upstream.close()
    if redis_server is not None:
        redis_server.terminate()
    if cluster is not None:
        cluster.kill_all()
    if sink is not None:
        sink.terminate()
    report = {"meta": machine(args, workloads), "runs": runs, "summary": summarize(runs)}
    if rounds:
        report["rounds"] = rounds
    return {**report, "scale": scale} if scale else report


def reset_peak_rss(pid: int) -> None:
    """Start the process's peak RSS (VmHWM) again from now, so each round's peak is its own."""
    for p in tree(pid):
        with contextlib.suppress(OSError):
            Path(f"/proc/{p}/clear_refs").write_text("5")


async def run_rounds(
    args: argparse.Namespace, upstream_port: int, direct: Target, name: str, env: dict[str, str] | None
) -> list[dict[str, Any]]:
    """#23: rounds of W1, then SLOW, then SHORT against one gateway process, as a long-lived process serves them.
    Latency is added latency: the round's figure less the upstream's own, measured directly once per repetition."""
    w1, slow = (QUICK["W1"], QUICK_SLOW) if args.quick else (FULL["W1"], SLOW)
    rows: list[dict[str, Any]] = []
    for rep in range(args.rounds_reps):
        reference_w1 = await run_workload(direct, w1, None)
        reference_slow = await run_slow(direct, None, "direct", "SLOW", slow)
        probe = Path(tempfile.mkdtemp(prefix="chatsse-probe-")) / "probe.json"
        gateway = Gateway(name, upstream_port, 1, {0}, env, probe=probe)
        await gateway.wait_ready()
        try:
            target = gateway.target()
            await gateway.reading()  # the start-up's collections are not the first round's
            for number in range(1, args.rounds + 1):
                reset_peak_rss(gateway.pid)
                first = await run_workload(target, w1, gateway)
                reset_peak_rss(gateway.pid)
                many, short = await run_scale(target, gateway, name, quick=args.quick)
                # Idle: what the round left behind, once a peak's memory could be returned (chatsse/server/memory.py).
                await asyncio.sleep(1.0 if args.quick else SETTLE_SECONDS + 2 * CHECK_SECONDS)
                reading = await gateway.reading()
                row = {
                    "target": name,
                    "rep": rep,
                    "round": number,
                    "w1_ttft_p99_added_ms": first["ttft_p99_ms"] - reference_w1["ttft_p99_ms"],
                    "w1_gap_p99_added_ms": first["gap_p99_ms"] - reference_w1["gap_p99_ms"],
                    "w1_cpu_s_per_1k_chunks": first["cpu_s_per_1k_chunks"],
                    "slow_ttft_p99_added_ms": many["ttft_p99_ms"] - reference_slow["ttft_p99_ms"],
                    "slow_gap_p99_added_ms": many["gap_p99_ms"] - reference_slow["gap_p99_ms"],
                    "slow_cpu_s_per_1k_chunks": many["cpu_s_per_1k_chunks"],
                    "slow_kb_per_open_stream": many["kb_per_open_stream"],
                    "short_streams_per_s": short["streams_per_s"],
                    "short_cpu_ms_per_stream": short["cpu_ms_per_stream"],
                    "idle_rss_mb": rss_mb(gateway.pid),
                    "open_fds": len(list(Path(f"/proc/{gateway.pid}/fd").iterdir())),
                    "gc_tracked": reading["tracked"],
                    "gc_by_generation": reading["by_generation"],
                    "gc_collections": reading["collections"],
                    "gc_longest_pause_ms": reading["longest_pause_ms"],
                    "gc_total_pause_ms": reading["total_pause_ms"],
                    "gc_types": reading["types"],
                    "complete": first["complete"] + many["complete"] + short["complete"],
                    "streams": first["streams"] + many["streams"] + short["streams"],
                    "chunks": first["chunks"] + many["chunks"],
                    "expected_chunks": first["expected_chunks"] + many["expected_chunks"],
                }
                rows.append(row)
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items() if k != "gc_types"}
                print(f"{name} round {number} (rep {rep}): {json.dumps(shown)}", flush=True)
            kept = await gateway.reading(collect=True)
            rows[-1].update(kept_objects=kept["tracked"], kept_types=kept["types"])
            rows[-1].update(kept_rss_mb=kept["rss_mb"], trimmed_rss_mb=kept["rss_after_trim_mb"])
            print(
                f"after a full collection: {kept['tracked']} objects kept, {kept['rss_mb']:.1f} MB RSS, "
                f"{kept['rss_after_trim_mb']:.1f} MB after malloc_trim"
            )
        finally:
            gateway.stop()
    return rows


@contextlib.contextmanager
def profiled(gateway: Gateway | None, path: Path | None) -> Iterator[None]:
    """py-spy samples the gateway while the block runs (collapsed stacks for bench/stacks.py), if asked."""
    if gateway is None or path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(gateway.pid),
        "--rate",
        "250",
        "--format",
        "raw",
        "-o",
        str(path),
    ]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


async def run_slow(
    target: Target, gateway: Gateway | None, name: str, label: str, spec: tuple[int, int, float, float, float]
) -> dict[str, Any]:
    """Many slow streams open at once (SLOW, or MANY with --many): latency added, CPU per chunk, RSS per stream."""
    streams, tokens, delay, stagger, first = spec
    idle_rss = rss_mb(gateway.pid) if gateway else 0.0
    cpu_before = cpu_seconds(gateway.pid) if gateway else 0.0
    own_before = cpu_seconds(os.getpid())
    started = time.perf_counter()
    results = await run_streams(target, streams, tokens, delay, stagger, first)
    row: dict[str, Any] = {"target": name, "workload": label, "wall_s": time.perf_counter() - started}
    row.update(measure(results, tokens))
    row["harness_cpu_pct"] = 100 * (cpu_seconds(os.getpid()) - own_before) / row["wall_s"]
    if gateway:
        row["cpu_s"] = cpu_seconds(gateway.pid) - cpu_before
        row["cpu_s_per_1k_chunks"] = row["cpu_s"] / (row["chunks"] / 1000)
        row["idle_rss_mb"] = idle_rss
        row["peak_rss_mb"] = peak_rss_mb(gateway.pid)
        row["kb_per_open_stream"] = 1024 * (row["peak_rss_mb"] - idle_rss) / streams
    print(f"{name:8} {label}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})}")
    return row


async def run_scale(
    target: Target,
    gateway: Gateway | None,
    name: str,
    profile: Path | None = None,
    quick: bool = False,
    short_only: bool = False,
) -> list[dict[str, Any]]:
    """The two at-scale workloads (#12) on one target: many slow streams, then short replies."""
    rows = []
    if not short_only:
        with profiled(gateway, profile and profile / f"{name}-SLOW.txt"):
            rows.append(await run_slow(target, gateway, name, "SLOW", QUICK_SLOW if quick else SLOW))
    clients, total, short_tokens = QUICK_SHORT if quick else SHORT
    cpu_before = cpu_seconds(gateway.pid) if gateway else 0.0
    started = time.perf_counter()
    with profiled(gateway, profile and profile / f"{name}-SHORT.txt"):
        results = await run_closed_loop(target, clients, total, short_tokens)
    wall = time.perf_counter() - started
    complete = sum(1 for r in results if r.done and r.tokens == short_tokens)
    row = {"target": name, "workload": "SHORT", "streams": len(results), "complete": complete, "wall_s": wall}
    row["streams_per_s"] = complete / wall
    if gateway:
        row["cpu_ms_per_stream"] = 1000 * (cpu_seconds(gateway.pid) - cpu_before) / max(1, complete)
    rows.append(row)
    print(f"{name:8} SHORT: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})}")
    return rows


def summary_line(row: dict[str, Any]) -> str:
    text = f"{row['complete']}/{row['streams']} ok, {row['chunks_per_s']:.0f} chunks/s"
    text += f", ttft p50 {row['ttft_p50_ms']:.1f} ms"
    if "cpu_s_per_1k_chunks" in row:
        text += f", {row['cpu_s_per_1k_chunks']:.4f} cpu-s/1k, rss {row['peak_rss_mb']:.0f} MB"
    return text + f", harness cpu {row['harness_cpu_pct']:.0f}%"


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per workload and target: each figure's median, min and max over repetitions (vs direct in the same rep)."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    by_key = {(r["rep"], r["target"], r["workload"]): r for r in runs if r.get("scaling") is None}
    for (rep, target, workload), row in sorted(by_key.items()):
        base = by_key.get((rep, "direct", workload))
        figures = {
            "chunks_per_s": row["chunks_per_s"],
            "ttft_p50_ms": row["ttft_p50_ms"],
            "ttft_p99_ms": row["ttft_p99_ms"],
            "gap_p99_ms": row["gap_p99_ms"],
        }
        if target != "direct" and base:
            figures["delivered_pct_of_direct"] = 100 * row["chunks_per_s"] / base["chunks_per_s"]
            figures["ttft_p50_added_ms"] = row["ttft_p50_ms"] - base["ttft_p50_ms"]
            figures["ttft_p99_added_ms"] = row["ttft_p99_ms"] - base["ttft_p99_ms"]
            figures["gap_p99_added_ms"] = row["gap_p99_ms"] - base["gap_p99_ms"]
            figures["cpu_s_per_1k_chunks"] = row["cpu_s_per_1k_chunks"]
            figures["peak_rss_mb"] = row["peak_rss_mb"]
        figures["incomplete"] = row["incomplete"]
        for name, value in figures.items():
            out.setdefault(workload, {}).setdefault(target, {}).setdefault(name, []).append(value)
    return {
        w: {t: {n: [statistics.median(v), min(v), max(v)] for n, v in figs.items()} for t, figs in targets.items()}
        for w, targets in out.items()
    }


def machine(args: argparse.Namespace, workloads: dict[str, Any]) -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "mode": "quick" if args.quick else "full",
        "reps": args.reps,
        "workloads": {
            k: dict(zip(["streams", "tokens", "delay_s", "stagger_s"], v, strict=True)) for k, v in workloads.items()
        },
    }


ROWS = [
    ("delivered_pct_of_direct", "delivered, % of direct", "{:.1f}"),
    ("cpu_s_per_1k_chunks", "gateway CPU-s / 1k chunks", "{:.4f}"),
    ("ttft_p50_ms", "TTFT p50, ms", "{:.1f}"),
    ("ttft_p50_added_ms", "TTFT p50 added, ms", "{:+.1f}"),
    ("ttft_p99_added_ms", "TTFT p99 added, ms", "{:+.1f}"),
    ("gap_p99_added_ms", "inter-token gap p99 added, ms", "{:+.1f}"),
    ("chunks_per_s", "chunks/s delivered", "{:,.0f}"),
    ("peak_rss_mb", "peak RSS, MB", "{:.0f}"),
    ("incomplete", "incomplete streams", "{:.0f}"),
]


def markdown(report: dict[str, Any]) -> str:
    """The results as tables: median [min-max] over repetitions, for each workload and target."""
    meta = report["meta"]
    lines = [
        f"# chatsse benchmark ({meta['mode']}, {meta['date']})",
        "",
        f"{meta['cpus']} CPUs ({meta['cpu_model']}), Python {meta['python']}; gateway pinned to CPU 0, harness to "
        f"CPU 1; {meta['reps']} interleaved repetitions; median [min-max].",
        "",
    ]
    for workload, targets in report["summary"].items():
        spec = meta["workloads"][workload]
        lines += [
            f"## {workload}: {spec['streams']} streams x {spec['tokens']} tokens, "
            + (f"{spec['delay_s'] * 1000:.0f} ms/token" if spec["delay_s"] else "no delay"),
            "",
            "| figure | " + " | ".join(targets) + " |",
            "|---|" + "---|" * len(targets),
        ]
        for key, label, fmt in ROWS:
            cells = []
            for figures in targets.values():
                if key not in figures:
                    cells.append("")
                    continue
                median, low, high = figures[key]
                cell = fmt.format(median)
                cells.append(cell if low == high else f"{cell} [{fmt.format(low)} to {fmt.format(high)}]")
            if any(cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    scaled = [r for r in report["runs"] if r.get("scaling")]
    if scaled:
        lines += ["## W1 with WEB_CONCURRENCY=1 and 2 (one run each; 2 workers share both CPUs with the harness)", ""]
        lines += [
            "| workers | chunks/s | gateway CPU % of one core | CPU-s / 1k chunks | TTFT p50 ms |",
            "|---|---|---|---|---|",
        ]
        for r in scaled:
            lines.append(
                f"| {r['workers']} | {r['chunks_per_s']:,.0f} | {r['gateway_cpu_pct']:.0f} | "
                f"{r['cpu_s_per_1k_chunks']:.4f} | {r['ttft_p50_ms']:.1f} |"
            )
        lines.append("")
    if report.get("scale"):
        lines += scale_tables(report["scale"])
    if report.get("rounds"):
        lines += rounds_table(report["rounds"])
    harness = [r["harness_cpu_pct"] for r in report["runs"] if r["workload"] != "W2" or r["target"] != "direct"]
    if harness:
        lines.append(
            f"Harness CPU (upstream + load generator) peaked at {max(harness):.0f}% of its core while a gateway ran."
        )
    return "\n".join(lines) + "\n"


SCALE_FIGURES = {
    "SLOW": [
        "ttft_p50_ms",
        "ttft_p99_ms",
        "gap_p99_ms",
        "chunks_per_s",
        "cpu_s_per_1k_chunks",
        "peak_rss_mb",
        "kb_per_open_stream",
    ],
    "SHORT": ["streams_per_s", "cpu_ms_per_stream"],
    "MANY": [
        "ttft_p99_ms",
        "gap_p99_ms",
        "chunks_per_s",
        "cpu_s",
        "cpu_s_per_1k_chunks",
        "peak_rss_mb",
        "kb_per_open_stream",
    ],
}


def scale_tables(rows: list[dict[str, Any]]) -> list[str]:
    """Per workload: each target's median over the repetitions (min to max when there were several)."""
    lines: list[str] = []
    for workload, figures in SCALE_FIGURES.items():
        mine = [r for r in rows if r["workload"] == workload]
        if not mine:
            continue
        reps = len({r.get("rep", 0) for r in mine})
        lines += [f"## At scale (#12): {workload}, median of {reps} (min to max)", ""]
        lines += ["| target | complete | " + " | ".join(figures) + " |", "|---" * (len(figures) + 2) + "|"]
        for target in dict.fromkeys(r["target"] for r in mine):
            runs = [r for r in mine if r["target"] == target]
            cells = [f"{sum(r['complete'] for r in runs)}/{sum(r['streams'] for r in runs)}"]
            for figure in figures:
                values = [r[figure] for r in runs if r.get(figure) is not None]
                if not values:
                    cells.append("")
                    continue
                middle = statistics.median(values)
                spread = f" ({min(values):,.4g} to {max(values):,.4g})" if len(values) > 1 else ""
                cells.append(f"{middle:,.4g}{spread}")
            lines.append(f"| {target} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


ROUND_FIGURES = [
    ("w1_ttft_p99_added_ms", "W1 TTFT p99 +ms", "{:+.1f}"),
    ("w1_gap_p99_added_ms", "W1 gap p99 +ms", "{:+.1f}"),
    ("w1_cpu_s_per_1k_chunks", "W1 CPU-s/1k", "{:.4f}"),
    ("slow_ttft_p99_added_ms", "SLOW TTFT p99 +ms", "{:+.1f}"),
    ("slow_gap_p99_added_ms", "SLOW gap p99 +ms", "{:+.1f}"),
    ("slow_cpu_s_per_1k_chunks", "SLOW CPU-s/1k", "{:.4f}"),
    ("slow_kb_per_open_stream", "SLOW KB/stream", "{:.1f}"),
    ("short_streams_per_s", "SHORT streams/s", "{:.0f}"),
    ("idle_rss_mb", "idle RSS MB", "{:.1f}"),
    ("open_fds", "open fds", "{:.0f}"),
    ("gc_tracked", "gc-tracked objects", "{:,.0f}"),
    ("gc_longest_pause_ms", "longest gc pause ms", "{:.1f}"),
]


def rounds_table(rows: list[dict[str, Any]]) -> list[str]:
    """#23: per round, each figure's median over the repetitions (each repetition one gateway process)."""
    lines: list[str] = []
    for target in dict.fromkeys(r["target"] for r in rows):
        theirs = [r for r in rows if r["target"] == target]
        reps = len({r["rep"] for r in theirs})
        lines += [f"## Rounds (#23): W1, SLOW, SHORT against one {target} process, median of {reps}", ""]
        lines += ["| round | " + " | ".join(label for _, label, _ in ROUND_FIGURES) + " |"]
        lines += ["|---" * (len(ROUND_FIGURES) + 1) + "|"]
        for number in sorted({r["round"] for r in theirs}):
            mine = [r for r in theirs if r["round"] == number]
            cells = [fmt.format(statistics.median(r[key] for r in mine)) for key, _, fmt in ROUND_FIGURES]
            lines.append(f"| {number} | " + " | ".join(cells) + " |")
        kept = [r for r in theirs if "kept_objects" in r]
        if kept:
            lines += [
                "",
                f"After the last round, a full collection: {statistics.median(r['kept_objects'] for r in kept):,.0f}"
                f" objects kept, RSS {statistics.median(r['kept_rss_mb'] for r in kept):.1f} MB, "
                f"{statistics.median(r['trimmed_rss_mb'] for r in kept):.1f} MB after malloc_trim.",
            ]
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small workloads, 1 repetition, no peer")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; quick 1)")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, help="include the seed-style peer")
    parser.add_argument("--workers2", action=argparse.BooleanOptionalAction, help="also W1 with WEB_CONCURRENCY=2")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="where the JSON goes")
    parser.add_argument("--baseline", metavar="REV", help="also run the gateway as it was at this git commit")
    parser.add_argument("--failover", action="store_true", help="also a gateway whose first upstream answers 429")
    parser.add_argument("--guards", action="store_true", help="also a gateway with a pii guard on every reply's output")
    parser.add_argument("--resume", action="store_true", help="also gateways keeping replies, in-process and on Redis")
    parser.add_argument(
        "--tracing", action="store_true", help="also a gateway tracing every request to an OTLP sink (and the baseline)"
    )
    parser.add_argument("--cluster", action="store_true", help="also a gateway keeping replies on a Redis Cluster")
    parser.add_argument("--workloads", nargs="*", choices=sorted(FULL), help="only these of W1, W2, W3")
    parser.add_argument("--callers", action="store_true", help="also a caller with every limit, in memory and on Redis")
    parser.add_argument(
        "--faces", action="store_true", help="also W1 through /v1/chat/completions, useChat and /v1/responses"
    )
    parser.add_argument(
        "--responses-upstream",
        action="store_true",
        help="also chatsse (and with --faces, its faces) over an upstream speaking the Responses API",
    )
    parser.add_argument("--scale", action="store_true", help="also the at-scale workloads: SLOW and SHORT (#12)")
    parser.add_argument("--scale-targets", nargs="*", help="only these targets for --scale (direct, chatsse, baseline)")
    parser.add_argument("--short-only", action="store_true", help="--scale runs SHORT only, not SLOW")
    parser.add_argument("--scale-reps", type=int, default=1, help="repetitions of --scale (interleaved; median)")
    parser.add_argument("--many", action="store_true", help="also 10,000 slow streams open at once (#12)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy each gateway workload into DIR")
    parser.add_argument(
        "--variant", action="append", metavar="NAME=KEY=VALUE,...", help="also chatsse with this environment, as NAME"
    )
    parser.add_argument("--floors", action="store_true", help="also the stack floor and the ASGI floor (#23)")
    parser.add_argument("--rounds", type=int, default=0, metavar="N", help="N rounds of W1, SLOW, SHORT, one process")
    parser.add_argument("--rounds-targets", nargs="*", default=["chatsse"], help="--rounds for these (chatsse)")
    parser.add_argument("--rounds-reps", type=int, help="repetitions of --rounds, a process each (default 3; quick 1)")
    parser.add_argument(
        "--shedding",
        action=argparse.BooleanOptionalAction,
        help="gateways shed under overload, as by default (default: yes; quick: no, a smoke run on a busy machine)",
    )
    args = parser.parse_args()
    if not (args.shedding if args.shedding is not None else not args.quick):
        GATEWAY_DEFAULTS.update(NO_SHEDDING)
    args.reps = args.reps if args.reps is not None else (1 if args.quick else 3)  # 0: only --scale
    args.peer = (not args.quick) if args.peer is None else args.peer
    args.rounds_reps = args.rounds_reps if args.rounds_reps is not None else (1 if args.quick else 3)
    args.workers2 = (not args.quick) if args.workers2 is None else args.workers2
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    if args.scale or args.many or args.rounds:  # thousands of sockets at both ends: the benchmark's file limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:  # MANY holds 20,000 sockets and more in each process: raise the hard limit too, where allowed
            resource.setrlimit(resource.RLIMIT_NOFILE, (65536, max(hard, 65536)))
        except (ValueError, OSError):  # not allowed (a container without CAP_SYS_RESOURCE): up to the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with baseline_tree(args.baseline) as args.baseline_tree:
        report = asyncio.run(bench(args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{report['meta']['mode']}.json"
    path.write_text(json.dumps(report, indent=1))
    path.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    rows = report["runs"] + report.get("scale", []) + report.get("rounds", [])
    broken = [
        r
        for r in rows
        if r.get("incomplete") or r.get("complete") != r.get("streams") or r.get("chunks") != r.get("expected_chunks")
    ]
    if broken:
        print(f"FAILED: {len(broken)} runs lost streams or tokens", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
