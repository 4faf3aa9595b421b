"""Under overload it sheds (#35): with the event loop blocked on purpose (the test-only hook) in a real `chatsse
serve`, new chats get 503 `overloaded` at once, a stream already admitted ends byte-exact, readiness goes 503 and
back to 200 once the lag clears; the hysteresis itself, on a set clock; the collector's start-up freeze."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import httpx

from chatsse.server.overload import CALM_SECONDS, MAX_ACCEPT_WAIT, QUEUE_FLOOR, AcceptQueue, LoopLag
from chatsse.simulator import Simulator
from tests.helpers import STREAM, metric
from tests.servers import chatsse_serve, wait_until


def test_shedding_starts_past_the_bound_and_ends_only_after_a_calm_second() -> None:
    seen: list[float] = []
    lag = LoopLag(0.2, seen.append)
    lag.observe(0.1, 0.0)
    assert not lag.shedding
    lag.observe(0.3, 1.0)
    assert lag.shedding
    lag.observe(0.15, 1.1)  # under the bound, not under half of it: still shedding
    lag.observe(0.05, 1.2)
    lag.observe(0.3, 1.3)  # lagging again: the calm starts over
    lag.observe(0.05, 1.4)
    lag.observe(0.05, 1.4 + CALM_SECONDS - 0.01)
    assert lag.shedding
    lag.observe(0.05, 1.4 + CALM_SECONDS)
    assert not lag.shedding and seen[-1] == 0.05
    never = LoopLag(0.0)
    never.observe(5.0, 0.0, 1.0)
    assert not never.shedding
    # A saturated core sheds too, though its loop turns on time; it ends once the share is well under the bound.
    busy = LoopLag(0.5, max_cpu=0.9)
    busy.observe(0.01, 0.0, 0.97)
    assert busy.shedding
    busy.observe(0.01, 0.5, 0.85)  # under the bound, not by the margin: still shedding
    busy.observe(0.01, 0.6 + CALM_SECONDS, 0.85)
    assert busy.shedding
    busy.observe(0.01, 1.0, 0.7)
    busy.observe(0.01, 1.0 + CALM_SECONDS, 0.7)
    assert not busy.shedding


def test_a_busy_core_sheds_only_while_new_connections_wait_to_be_accepted() -> None:
    # A saturated process's loop still turns; its new connections wait in the kernel's accept queue (bench/REPORT.md).
    # That wait is the queue at the rate connections were accepted over the last second.
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    clients: list[socket.socket] = []
    accepted = [0]
    try:
        queue = AcceptQueue()
        baseline = queue.length(0.0)  # this process's other listeners (the suite's servers) take theirs at once
        assert baseline is not None
        for _ in range(QUEUE_FLOOR + 4):
            clients.append(socket.create_connection(listener.getsockname(), timeout=5))
        assert queue.length(1.0) == baseline + QUEUE_FLOOR + 4
        for _ in range(QUEUE_FLOOR):
            listener.accept()[0].close()
        assert queue.length(2.0) == baseline + 4
        # 40 queued, and 20 accepted in the last second: the next one waits 2 s.
        for _ in range(QUEUE_FLOOR + 20):
            clients.append(socket.create_connection(listener.getsockname(), timeout=5))
        reader = LoopLag(0.5, max_cpu=0.8, accepted=lambda: accepted[0])
        reader._accept_queue = queue
        assert reader._accept_wait(10.0) == float("inf")  # a backlog, and nothing accepted yet
        accepted[0] = 20
        wait = reader._accept_wait(11.0)
        assert wait is not None and abs(wait - (baseline + QUEUE_FLOOR + 24) / 20) < 1e-9
    finally:
        for client in clients:
            client.close()
        listener.close()
    # A busy core sheds only while new connections wait over MAX_ACCEPT_WAIT: a burst of new streams, or steady
    # work near capacity, is taken on time; where the wait cannot be known (None), the CPU share alone decides.
    busy = LoopLag(0.5, max_cpu=0.8)
    busy.observe(0.01, 0.0, 0.95, 0.0)
    busy.observe(0.01, 0.05, 0.95, MAX_ACCEPT_WAIT)
    assert not busy.shedding
    busy.observe(0.01, 0.1, 0.95, MAX_ACCEPT_WAIT * 3)
    assert busy.shedding and busy.wait == MAX_ACCEPT_WAIT * 3
    busy.observe(0.01, 0.2, 0.6, 0.0)  # calm: 15 points under the bound, for a second
    busy.observe(0.01, 0.21 + CALM_SECONDS, 0.6, 0.0)
    assert not busy.shedding
    idle = LoopLag(0.5, max_cpu=0.8)
    idle.observe(0.01, 0.0, 0.3, float("inf"))  # waiting, but not for want of CPU
    assert not idle.shedding
    unknown = LoopLag(0.5, max_cpu=0.8)
    unknown.observe(0.01, 0.0, 0.95, None)
    assert unknown.shedding


def test_a_blocked_loop_sheds_new_chats_keeps_admitted_streams_and_readiness_follows(tmp_path: Path) -> None:
    simulator = Simulator()
    simulator.start_in_thread()
    try:
        env = {"CHATSSE_TEST_HOOKS": "true", "CHATSSE_MAX_LOOP_LAG_MS": "100"}
        with chatsse_serve(tmp_path, simulator.url, env=env) as gateway:
            url = gateway.url
            words = " ".join(f"w{i}" for i in range(20))
            message = {"message": f"echo:{words}[sim: delay=0.1]"}
            expected = httpx.post(url + STREAM, json={"message": f"echo:{words}"}, timeout=30).text
            admitted: list[str] = []

            def read() -> None:
                admitted.append(httpx.post(url + STREAM, json=message, timeout=60).text)

            reader = threading.Thread(target=read)
            reader.start()
            assert wait_until(lambda: len(simulator.requests) == 2, timeout=10)
            assert httpx.post(url + "/_test/stall?ms=300&seconds=3", timeout=10).status_code == 202
            assert wait_until(lambda: httpx.get(url + "/health/ready", timeout=10).status_code == 503, timeout=10)
            ready = httpx.get(url + "/health/ready", timeout=10).json()
            assert ready["status"] == "overloaded" and ready["checks"]["shedding"] is True
            assert httpx.get(url + "/health/live", timeout=10).status_code == 200
            before = len(simulator.requests)
            shed = httpx.post(url + STREAM, json={"message": "echo:new"}, timeout=10)
            assert shed.status_code == 503 and shed.json()["error"]["code"] == "overloaded"
            assert shed.headers["retry-after"] == "1" and len(simulator.requests) == before
            openai_shed = httpx.post(
                url + "/v1/chat/completions", json={"model": "default", "messages": []}, timeout=10
            )
            assert openai_shed.status_code == 503 and openai_shed.json()["error"]["code"] == "overloaded"
            reader.join(60)
            # The reply admitted before the stall ends as it would have (its text reads the same, its usage too).
            assert admitted and _texts(admitted[0]) == _texts(expected) and '"done":true' in admitted[0]
            assert wait_until(lambda: httpx.get(url + "/health/ready", timeout=10).status_code == 200, timeout=15)
            assert httpx.post(url + STREAM, json={"message": "echo:back"}, timeout=10).status_code == 200
            scrape = httpx.get(url + "/metrics", timeout=10).text
            assert metric(scrape, "chatsse_shed_total") == 2
            assert metric(scrape, "chatsse_gc_frozen_objects") > 1000  # gc.freeze() ran after start-up
    finally:
        simulator.stop_thread()


def _texts(body: str) -> str:
    return "".join(line for line in body.splitlines() if '"content"' in line)
