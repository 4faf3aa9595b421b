"""Open streams' lifecycle: the cap on open streams, and the drain on a real SIGTERM of `chatsse serve`."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM, chat, text_of
from tests.servers import chatsse_serve, wait_until

pytestmark = pytest.mark.anyio


def read_events(url: str, message: str, into: list[dict[str, object]]) -> None:
    with httpx.stream("POST", url + "/api/v1/chat/stream", json={"message": message}, timeout=30) as response:
        buffer = ""
        for text in response.iter_text():
            buffer += text
            *blocks, buffer = buffer.split("\n\n")
            into += [json.loads(b[6:]) for b in blocks if b.startswith("data: ")]


async def test_stream_cap_refuses_at_once_with_retry_after(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(max_streams=2)
    async with httpx.AsyncClient() as client:
        holds = [{"message": f"echo:held {i}[sim: hold_after=1 hold=cap]"} for i in range(2)]
        async with (
            aconnect_sse(client, "POST", gateway.url + STREAM, json=holds[0]) as first,
            aconnect_sse(client, "POST", gateway.url + STREAM, json=holds[1]) as second,
        ):
            # Held in names: an event iterator dropped after its first event is finalized, which closes its
            # response, and the gateway would rightly count that stream as gone.
            held = [first.aiter_sse(), second.aiter_sse()]
            for stream in held:
                await anext(stream)
            started = time.monotonic()
            refused = await client.post(gateway.url + STREAM, json={"message": "echo:third"})
            assert time.monotonic() - started < 2  # at once, not queued
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "too_many_streams", refused.text
            assert refused.headers["retry-after"] == "1"
            assert len(simulator.requests) == 2
            simulator.release("cap")
        assert wait_until(lambda: gateway.open_tasks() == 0)  # the two held streams have ended
        response, events = await chat(client, gateway.url, {"message": "echo:room again"})
    assert response.status_code == 200 and text_of(events) == "room again"


def test_sigterm_drains_open_streams_then_exits_0(tmp_path: Path) -> None:
    simulator = Simulator()
    simulator.start_in_thread()
    try:
        with chatsse_serve(tmp_path, simulator.url, env={"CHATSSE_DRAIN_SECONDS": "2"}) as gateway:
            url, process = gateway.url, gateway.process
            short: list[dict[str, object]] = []
            long: list[dict[str, object]] = []
            readers = [
                threading.Thread(target=read_events, args=(url, "echo:a b c d e f[sim: delay=0.15]", short)),
                threading.Thread(target=read_events, args=(url, "echo:never ending[sim: hold_after=1]", long)),
            ]
            for reader in readers:
                reader.start()
            assert wait_until(lambda: len(short) >= 1 and len(long) >= 1)
            ready = httpx.get(url + "/health/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            checks = ready.json()["checks"]
            assert checks["started"] is True and checks["draining"] is False and checks["shedding"] is False
            assert set(checks["background"]) == {"memory-return", "budget-alerts", "loop-lag", "collector"}
            assert set(checks["background"].values()) == {"ok"}

            process.send_signal(signal.SIGTERM)
            assert wait_until(lambda: httpx.get(url + "/health").status_code == 503)
            assert httpx.get(url + "/health").json()["status"] == "draining"
            # Readiness sends traffic away; liveness stays 200, so Kubernetes does not restart the pod mid-drain.
            ready = httpx.get(url + "/health/ready")
            assert ready.status_code == 503 and ready.json()["status"] == "draining"
            assert ready.json()["checks"]["draining"] is True
            assert httpx.get(url + "/health/live").status_code == 200
            refused = httpx.post(url + "/api/v1/chat/stream", json={"message": "echo:new"})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"

            for reader in readers:
                reader.join(15)
            assert process.wait(15) == 0
            stderr = gateway.stop()
        # The short stream finished normally during the drain; the long one got a final server_shutdown event.
        assert "".join(str(e.get("content", "")) for e in short) == "a b c d e f" and short[-1].get("done") is True
        assert long[0] == {"content": "never"} and long[-1]["error"]["code"] == "server_shutdown"  # type: ignore[index]
        assert not any("done" in e for e in long)
        assert "Traceback" not in stderr
        assert len(simulator.requests) == 2  # the refused request never reached the upstream
    finally:
        simulator.stop_thread()


def test_sigterm_ends_detached_streams_with_the_rest(tmp_path: Path) -> None:
    simulator = Simulator()
    simulator.start_in_thread()
    try:
        env = {"CHATSSE_DRAIN_SECONDS": "1", "CHATSSE_RESUME_SECONDS": "60"}
        with chatsse_serve(tmp_path, simulator.url, env=env) as gateway:
            url, process = gateway.url, gateway.process
            with httpx.stream(
                "POST", url + "/api/v1/chat/stream", json={"message": "echo:a b[sim: hold_after=1]"}
            ) as r:
                next(r.iter_bytes())  # the first event, then this client leaves: the reply goes on, detached
            upstream = simulator.requests[-1]
            assert not wait_until(lambda: upstream.peer_closed_at is not None, timeout=0.5)  # still read, for nobody
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0
        assert upstream.peer_closed_at is not None  # drain ended it and closed its upstream
    finally:
        simulator.stop_thread()
