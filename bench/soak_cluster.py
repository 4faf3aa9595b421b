"""`python bench/soak.py --cluster`: the soak against three `chatsse serve` instances behind nginx (round robin) on a
six-node Redis Cluster (three primaries, each with a replica, node timeout 1 s), with random faults: an instance
SIGKILLed (and started again a few seconds later), or a primary killed (its replica takes over; it rejoins as one).

Clients stream through nginx, drop their connections at random and resume through nginx, on whichever instance it
picks, until their reply ends. The figure: every stream ends with `done` or an error event (or an HTTP error before
it started), and its text is never lost or duplicated before that: a `done` reply is byte-exact, and the text before
an error is a prefix of the reply. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
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
from tests.nginx import Nginx
from tests.redis_server import RedisClusterNodes
from tests.servers import free_port

STREAM = "/api/v1/chat/stream"
CHATSSE = str(Path(sys.executable).with_name("chatsse"))


class Instance:
    """One `chatsse serve` on a fixed port, that can be killed and started again there."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name, self.env, self.port = name, env, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [CHATSSE, "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self) -> None:
        async with httpx.AsyncClient(timeout=1) as client:
            for _ in range(300):
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"instance {self.name} did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


async def one_stream(client: httpx.AsyncClient, base: str, rng: random.Random, outcomes: Counter[str]) -> None:
    """POST, maybe cut after a few events, resume (through nginx) until the reply ends; check the text."""
    words = [f"w{rng.randrange(10_000)}" for _ in range(rng.randrange(5, 40))]
    expected = " ".join(words)
    body = {"message": f"echo:{expected}[sim: delay={rng.choice([0.005, 0.02, 0.05])}]"}
    cut = rng.randrange(1, 8) if rng.random() < 0.5 else None
    received, last_id, stream_id, final = "", "", "", None
    refused_with = ""  # the last resume's status other than 200: what a reply never ended with says why
    deadline = time.monotonic() + 60
    for connection in range(200):
        if final is not None or time.monotonic() > deadline:
            break
        if connection and not stream_id:
            break
        headers = {"last-event-id": last_id} if last_id else {}
        try:
            if not stream_id:
                request = client.build_request("POST", base + STREAM, json=body)
            else:
                request = client.build_request("GET", f"{base}{STREAM}/{stream_id}", headers=headers)
            response = await client.send(request, stream=True)
        except httpx.HTTPError:
            await asyncio.sleep(0.05)
            continue
        try:
            if response.status_code != 200:
                await response.aread()
                if not stream_id:
                    outcomes[f"http_{response.status_code}"] += 1  # refused before it started
                    return
                refused_with = f"_after_{response.status_code}"
                await asyncio.sleep(0.1)  # 503 while Redis fails over, 502 from nginx: resume again
                continue
            stream_id = stream_id or response.headers.get("x-chatsse-stream", "")
            decoder, seen = SSEDecoder(), 0
            async for raw in response.aiter_bytes():
                for event in decoder.decode(raw):
                    payload = json.loads(event.data)
                    last_id = event.id or last_id
                    seen += 1
                    if "content" in payload:
                        received += payload["content"]
                    elif "done" in payload or "error" in payload:
                        final = payload
                if final is not None or (cut is not None and seen >= cut):
                    break
            cut = None
        except httpx.HTTPError:
            pass  # the instance it was on died: resume on another
        finally:
            await response.aclose()
    if final is None and not stream_id:
        outcomes["VIOLATION_no_response"] += 1  # the POST itself failed: no reply to resume
    elif final is None:
        outcomes[f"VIOLATION_no_final_event{refused_with}"] += 1
    elif "done" in final:
        outcomes["done" if received == expected else "VIOLATION_text_differs"] += 1
    else:
        code = final["error"]["code"]
        outcomes[f"error_{code}" if expected.startswith(received) else "VIOLATION_text_before_error"] += 1


async def chaos(
    instances: list[Instance], cluster: RedisClusterNodes, rng: random.Random, until: float, faults: Counter[str]
) -> None:
    """Every few seconds, SIGKILL an instance or a primary (the two in turn, the first at random); bring the killed one
    back a few seconds later."""
    instance_next = rng.random() < 0.5
    while time.monotonic() + 6 < until:
        await asyncio.sleep(rng.uniform(2, 4))
        instance_next = not instance_next
        if not instance_next:
            victim = rng.choice(instances)
            victim.kill()
            faults["instance_killed"] += 1
            await asyncio.sleep(rng.uniform(1, 3))
            victim.start()
            await victim.ready()
        else:
            primary = rng.choice(cluster.primaries())
            cluster.kill(primary)
            faults["primary_killed"] += 1
            await asyncio.to_thread(cluster.wait_until_ok, 30)  # its replica took over
            cluster.start_node(primary)  # it rejoins as a replica
            await asyncio.to_thread(cluster.wait_until_ok, 30)


async def soak(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="chatsse-soak-cluster-"))
    cluster = RedisClusterNodes(workdir / "cluster", primaries=3, replicas=1, node_timeout=1000)
    simulator = Simulator(api_key="soak")
    simulator.start_in_thread()
    instances: list[Instance] = []
    nginx: Nginx | None = None
    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    try:
        cluster.start()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_OPENAI", "CHATSSE_"))},
            "AZURE_OPENAI_ENDPOINT": simulator.url,
            "AZURE_OPENAI_API_KEY": "soak",
            "AZURE_OPENAI_DEPLOYMENT_NAME": "soak",
            "CHATSSE_REDIS_URL": cluster.url,
            "CHATSSE_RESUME_SECONDS": "60",
            "CHATSSE_PING_SECONDS": "0",
            "CHATSSE_LOG_FORMAT": "json",
        }
        instances = [Instance(name, env) for name in "abc"]
        for instance in instances:
            instance.start()
        await asyncio.gather(*(i.ready() for i in instances))
        nginx = Nginx(workdir / "nginx", [i.port for i in instances])
        nginx.start()
        until = time.monotonic() + args.seconds
        started = 0
        timeout = httpx.Timeout(5, read=10)
        async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=None)) as client:

            async def worker() -> None:
                nonlocal started
                while time.monotonic() < until and started < args.max_streams:
                    started += 1
                    await one_stream(client, nginx.url, rng, outcomes)

            await asyncio.gather(
                chaos(instances, cluster, rng, until, faults), *(worker() for _ in range(args.concurrency))
            )
    finally:
        if nginx is not None:
            nginx.stop()
        for instance in instances:
            instance.stop()
        cluster.kill_all()
        simulator.stop_thread()
    total = sum(outcomes.values())
    problems = [f"{count} x {name}" for name, count in outcomes.items() if name.startswith("VIOLATION")]
    if total == 0:
        problems.append("no streams ran")
    print(
        f"soak --cluster: {total} streams in {args.seconds:.0f}s with {args.concurrency} clients: "
        + ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items()))
    )
    print("soak --cluster: faults " + ", ".join(f"{name} {count}" for name, count in sorted(faults.items())))
    for problem in problems:
        print(f"soak: FAILED: {problem}", file=sys.stderr)
    print("soak: OK" if not problems else "soak: FAILED")
    return 1 if problems else 0
