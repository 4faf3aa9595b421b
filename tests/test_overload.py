"""Under overload it sheds (#35): with the event loop blocked on purpose (the test-only hook) in a real `chatsse
serve`, new chats get 503 `overloaded` at once, a stream already admitted ends byte-exact, readiness goes 503 and
back to 200 once the lag clears; the hysteresis itself, on a set clock; the collector's start-up freeze."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatsse.server import protocol
from chatsse.server.backlog import AcceptQueue
from chatsse.server.overload import (
    CALM_SECONDS,
    CEILING_LIFT_SECONDS,
    CEILING_MAX_STEP,
    CEILING_MIN_STREAMS,
    CEILING_SHARE,
    CEILING_STEP,
    MAX_ACCEPT_WAIT,
    QUEUE_FLOOR,
    Ceiling,
    LoopLag,
)
from chatsse.server.protocol import GuardedHttpProtocol
from chatsse.settings import Settings
from chatsse.simulator import Simulator
from tests.helpers import STREAM, metric
from tests.servers import chatsse_serve, wait_until


def test_shedding_starts_past_the_bound_and_ends_only_after_a_calm_second() -> None:
    seen: list[float] = []
    lag = LoopLag(0.2, seen.append)
    lag.observe(0.1, 0.0)
    assert not lag.shedding
    # One late reading is a hiccup (a host's stall, a collector pass): it sheds nothing. Two in a row shed.
    lag.observe(0.6, 0.6)
    lag.observe(0.01, 0.7)
    assert not lag.shedding
    lag.observe(0.3, 0.8)
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
        # A backlog where the last reading found none is a fresh burst: taken at the loop's next turn, it waits
        # about as long as the loop was away (the reading's lag), not at the rate of an idle second before it.
        burst = LoopLag(0.5, max_cpu=0.8, accepted=lambda: accepted[0])
        burst._accept_queue = queue
        assert burst._accept_wait(10.0, lag=0.3) == 0.3
        assert reader._accept_wait(10.0, lag=0.002) == 0.002
        assert reader._accept_wait(10.05) == float("inf")  # still there, and nothing accepted yet
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


def test_a_listener_closed_leaves_the_accept_queue_read_from_those_still_open() -> None:
    # A process whose listeners come and go (this suite's, or a server that rebinds): the queue is still read, and a
    # new listener is found, rather than read as unknown (which would shed on the CPU share alone).
    staying = socket.create_server(("127.0.0.1", 0), backlog=128)
    first = socket.create_server(("127.0.0.1", 0), backlog=128)
    second = socket.create_server(("127.0.0.1", 0), backlog=128)  # opened after the queue looked for listeners
    clients: list[socket.socket] = []
    try:
        queue = AcceptQueue()
        queue.fds = [staying.fileno(), first.fileno()]  # what it found, as at start-up
        assert queue.length(0.0) == 0
        queue._looked_at = 0.0
        first.close()
        clients = [socket.create_connection(addr, timeout=5) for addr in (staying.getsockname(),) * 2]
        clients += [socket.create_connection(second.getsockname(), timeout=5) for _ in range(3)]
        assert queue.length(0.5) == 2  # not looked for again yet: those still open are read
        grown = queue.length(2.0)  # looked for again: the new listener's queue counts (and the suite's own)
        assert grown is not None and grown >= 5 and second.fileno() in queue.fds
    finally:
        for client in clients:
            client.close()
        for listener in (staying, first, second):
            listener.close()


def test_an_overload_of_the_core_leaves_a_ceiling_on_the_streams_open_until_the_load_has_gone() -> None:
    open_streams = [500]
    gauge: list[int] = []
    lag = LoopLag(0.5, max_cpu=0.8, accepted=lambda: 0, open_streams=lambda: open_streams[0], limited=gauge.append)
    assert lag.ceiling is not None
    ceiling = lag.ceiling
    lag.observe(0.01, 0.0, 0.95, 0.0)  # busy, nobody waiting: no overload, no ceiling
    assert not lag.refuses() and ceiling.limit is None
    lag.observe(0.01, 0.1, 0.95, MAX_ACCEPT_WAIT * 2)  # behind: shedding, and a ceiling below what was open
    assert lag.shedding and lag.refuses() and ceiling.limit == int(CEILING_SHARE * 500)
    assert gauge == [0, int(CEILING_SHARE * 500)]  # the gauge follows it, 0 while there is none
    open_streams[0] = 300
    # Under a ceiling, what is admitted is bounded already: a core back under its bound (no margin) is calm.
    lag.observe(0.01, 0.2, 0.75, 0.0)
    lag.observe(0.01, 0.2 + CALM_SECONDS, 0.75, 0.0)
    assert not lag.shedding
    limit = ceiling.limit
    open_streams[0] = limit - 1
    assert not lag.refuses()  # under the ceiling: admitted
    open_streams[0] = limit
    assert lag.refuses() and lag.overloaded(ceiling.refused_at)  # at it: refused at once, and readiness says so
    assert not lag.overloaded(ceiling.refused_at + CALM_SECONDS)
    # Turning streams away while the core keeps up, it rises once a second: by half the room left under the bound
    # (2% of itself at least, 5% at most); at the next overload it is lowered again from what is open then.
    lag.observe(0.01, ceiling.refused_at, 0.78, 0.0)  # little room left: 2% (the least), and one at least
    assert ceiling.limit == limit + max(1, int(limit * CEILING_STEP))
    lag.observe(0.01, ceiling.refused_at + 0.5, 0.4, 0.0)  # once a second at most
    raised = ceiling.limit
    ceiling.refused_at += CALM_SECONDS  # another chat turned away a second later (on this test's clock)
    lag.observe(0.01, ceiling.refused_at, 0.4, 0.0)  # half the bound left: 5% (the most)
    assert ceiling.limit == raised + int(raised * CEILING_MAX_STEP)
    lag.observe(0.01, ceiling.refused_at + CALM_SECONDS, 0.85, 0.0)  # over the bound, nobody waiting: no rise
    assert ceiling.limit == raised + int(raised * CEILING_MAX_STEP)
    open_streams[0] = ceiling.limit - 10  # fewer open than the ceiling when the core falls behind: from those
    lag.observe(0.01, ceiling.refused_at + CALM_SECONDS, 0.95, MAX_ACCEPT_WAIT * 2)
    assert ceiling.limit == int(CEILING_SHARE * open_streams[0])
    # Once fewer than half of it have stayed open for a while, it is lifted.
    quiet = ceiling.refused_at + 7
    lag.observe(0.01, quiet, 0.3, 0.0)
    lag.observe(0.01, quiet + CALM_SECONDS, 0.3, 0.0)
    assert not lag.shedding
    open_streams[0] = ceiling.limit // 2 - 1
    lag.observe(0.01, quiet + 2, 0.3, 0.0)
    lag.observe(0.01, quiet + 2 + CEILING_LIFT_SECONDS - 0.1, 0.3, 0.0)
    assert ceiling.limit is not None
    lag.observe(0.01, quiet + 2 + CEILING_LIFT_SECONDS, 0.3, 0.0)
    assert ceiling.limit is None and not lag.refuses() and gauge[-1] == 0
    # A lagging loop is no measure of the streams a core serves: shedding on lag leaves no ceiling.
    stalled = LoopLag(0.5, max_cpu=0.8, accepted=lambda: 0, open_streams=lambda: 10)
    stalled.observe(0.9, 0.0, 0.2, 0.0)
    stalled.observe(0.9, 0.9, 0.2, 0.0)
    assert stalled.shedding and stalled.ceiling is not None and stalled.ceiling.limit is None
    # Nor does a late reading on a busy core whose connections wait (the CPU share sheds; the lag alone would not).
    once = LoopLag(0.5, max_cpu=0.8, accepted=lambda: 0, open_streams=lambda: 500)
    once.observe(0.9, 0.0, 0.95, MAX_ACCEPT_WAIT * 2)
    assert once.shedding and once.ceiling is not None and once.ceiling.limit is None
    # With few streams open, the streams are not what overloads the core: no ceiling, and never one below that.
    few = [CEILING_MIN_STREAMS - 1]
    ceiling = Ceiling(lambda: few[0])
    ceiling.lower(0.0)
    assert ceiling.limit is None
    few[0] = CEILING_MIN_STREAMS
    ceiling.lower(0.0)
    assert ceiling.limit == CEILING_MIN_STREAMS
    few[0] = 1
    ceiling.lower(1.0)
    assert ceiling.limit == CEILING_MIN_STREAMS


def test_a_loop_on_a_shared_core_counts_the_time_it_waited_for_it() -> None:
    # With workers (or neighbours) on the same cores, a saturated loop's thread runs for part of a second and waits
    # for the rest; both are its demand for a core. A child pinned to one CPU beside a busy competitor measures it.
    script = """
import os, subprocess, sys, time
from chatsse.server.overload import thread_demand
os.sched_setaffinity(0, {0})
rival = subprocess.Popen([sys.executable, "-c", "import time\\nend = time.time() + 3\\nwhile time.time() < end: pass"])
time.sleep(0.3)
demand, ran, wall = thread_demand(), time.thread_time(), time.monotonic()
while time.monotonic() - wall < 1.0:
    pass
print(thread_demand() - demand, time.thread_time() - ran, time.monotonic() - wall)
rival.kill()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    demand, ran, wall = map(float, done.stdout.split())
    assert ran < 0.8 * wall  # it shared the core
    assert demand > 0.9 * wall  # and wanted all of it


def test_workers_reckon_their_shared_accept_queue_at_the_rate_of_all_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # uvicorn's workers share one listening socket: each sees the whole queue but accepts only its share of it.
    # `chatsse serve --workers N` tells each how many they are (WEB_CONCURRENCY), and configure() reads it.
    saved = (GuardedHttpProtocol.header_timeout, GuardedHttpProtocol.max_connections, GuardedHttpProtocol.sharing)
    azure = {
        "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9",
        "AZURE_OPENAI_API_KEY": "k",
        "AZURE_OPENAI_DEPLOYMENT_NAME": "d",
    }
    settings = Settings.from_env(azure, env_file=None)
    try:
        for workers, sharing in (("3", 3), ("", 1), ("many", 1)):
            monkeypatch.setenv("WEB_CONCURRENCY", workers)
            assert protocol.configure(settings).sharing == sharing
    finally:
        GuardedHttpProtocol.header_timeout, GuardedHttpProtocol.max_connections, GuardedHttpProtocol.sharing = saved


def test_a_blocked_loop_sheds_new_chats_keeps_admitted_streams_and_readiness_follows(
    tmp_path: Path, simulator: Simulator
) -> None:
    env = {"CHATSSE_TEST_HOOKS": "true", "CHATSSE_MAX_LOOP_LAG_MS": "100", "CHATSSE_MAX_CPU_PERCENT": "80"}
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
        assert ready["checks"]["stream_ceiling"] is None  # a stalled loop is no measure of what the core serves
        assert httpx.get(url + "/health/live", timeout=10).status_code == 200
        before = len(simulator.requests)
        shed = httpx.post(url + STREAM, json={"message": "echo:new"}, timeout=10)
        assert shed.status_code == 503 and shed.json()["error"]["code"] == "overloaded"
        assert shed.headers["retry-after"] == "1" and len(simulator.requests) == before
        openai_shed = httpx.post(url + "/v1/chat/completions", json={"model": "default", "messages": []}, timeout=10)
        assert openai_shed.status_code == 503 and openai_shed.json()["error"]["code"] == "overloaded"
        reader.join(60)
        # The reply admitted before the stall ends as it would have (its text reads the same, its usage too).
        assert admitted and _texts(admitted[0]) == _texts(expected) and '"done":true' in admitted[0]
        assert wait_until(lambda: httpx.get(url + "/health/ready", timeout=10).status_code == 200, timeout=15)
        assert httpx.post(url + STREAM, json={"message": "echo:back"}, timeout=10).status_code == 200
        scrape = httpx.get(url + "/metrics", timeout=10).text
        assert metric(scrape, "chatsse_shed_total") == 2
        assert metric(scrape, "chatsse_gc_frozen_objects") > 1000  # gc.freeze() ran after start-up
        # The operator reads when it began, why, and when it ended.
        logs = gateway.stop()
        assert logs.count("shedding new chats: the event loop is") == 1 and "ms late (bound 100 ms)" in logs
        assert logs.count("shedding ended after") == 1


def test_one_stall_of_the_loop_is_a_hiccup_and_sheds_nothing(tmp_path: Path, simulator: Simulator) -> None:
    # One late reading (a host's stall, a collector pass) is no overload: before, it refused every new chat for the
    # calm second after it. A chat sent during each stall waits for it, then is served; readiness stays 200.
    env = {"CHATSSE_TEST_HOOKS": "true", "CHATSSE_MAX_LOOP_LAG_MS": "200", "CHATSSE_MAX_CPU_PERCENT": "0"}
    with chatsse_serve(tmp_path, simulator.url, env=env) as gateway:
        url = gateway.url
        # A bound of 200 ms: the reading after the stall's would have to come 200 ms late too, on a busy machine.
        for attempt in range(3):
            stalled = httpx.post(url + "/_test/stall?ms=600&seconds=0.05", timeout=10)  # one block of 600 ms
            assert stalled.status_code == 202
            chat = httpx.post(url + STREAM, json={"message": f"echo:after stall {attempt}"}, timeout=30)
            assert chat.status_code == 200 and f'"content":" {attempt}"' in chat.text
            assert httpx.get(url + "/health/ready", timeout=10).status_code == 200
            threading.Event().wait(0.3)
        assert metric(httpx.get(url + "/metrics", timeout=10).text, "chatsse_shed_total") == 0
        assert "shedding new chats" not in gateway.stop()


def _texts(body: str) -> str:
    return "".join(line for line in body.splitlines() if '"content"' in line)


def test_an_overloaded_core_leaves_a_ceiling_that_refuses_new_chats_at_once_until_streams_end(
    tmp_path: Path, simulator: Simulator
) -> None:
    # A real overload of the core, in a real `chatsse serve`: its loop burns the CPU (the test-only hook) while a
    # burst of new connections waits in its accept queue. 70 streams are open then; the ceiling is 80% of them.
    held = 70
    env = {"CHATSSE_TEST_HOOKS": "true", "CHATSSE_MAX_LOOP_LAG_MS": "0", "CHATSSE_MAX_CPU_PERCENT": "80"}
    with chatsse_serve(tmp_path, simulator.url, env=env) as gateway:
        url = gateway.url
        words = " ".join(f"w{i}" for i in range(40))
        expected = _texts(httpx.post(url + STREAM, json={"message": f"echo:{words}"}, timeout=30).text)
        bodies: list[str] = []

        def read() -> None:
            message = {"message": f"echo:{words}[sim: hold_after=2 hold=ceiling]"}  # open until released
            bodies.append(httpx.post(url + STREAM, json=message, timeout=60).text)

        readers = [threading.Thread(target=read) for _ in range(held)]
        # Opened a few at a time: a burst of 70 on this busy machine would be an overload of its own (a queue
        # of connections, and a loop that waits for a core), shed before the test has its streams.
        for batch in range(0, held, QUEUE_FLOOR // 2):
            for reader in readers[batch : batch + QUEUE_FLOOR // 2]:
                reader.start()
            opened = 1 + min(held, batch + QUEUE_FLOOR // 2)
            assert wait_until(lambda opened=opened: len(simulator.requests) == opened, timeout=20)
        assert _ready(url)["checks"]["stream_ceiling"] is None and not _ready(url)["checks"]["shedding"]
        assert httpx.post(url + "/_test/stall?ms=200&seconds=3&burn=true", timeout=10).status_code == 202
        waiting: list[socket.socket] = []
        try:
            # Once the burning has filled the last second, new connections that send nothing yet, arriving for
            # a second, as under a real overload: a queue at reading after reading.
            threading.Event().wait(1.2)
            host, port = url.removeprefix("http://").split(":")
            for _ in range(10):
                waiting += [socket.create_connection((host, int(port)), timeout=5) for _ in range(QUEUE_FLOOR)]
                threading.Event().wait(0.1)
            assert wait_until(lambda: _ready(url)["checks"]["stream_ceiling"] is not None, timeout=15)
            ceiling = _ready(url)["checks"]["stream_ceiling"]
            assert CEILING_MIN_STREAMS <= ceiling <= CEILING_SHARE * held
            assert metric(httpx.get(url + "/metrics", timeout=10).text, "chatsse_stream_ceiling") == ceiling
        finally:
            for connection in waiting:
                connection.close()
        # Shedding ends once the core is back under its bound; the ceiling stays, and a new chat at it is
        # refused at once, with no upstream call, while the streams it let in go on.
        assert wait_until(lambda: not _ready(url)["checks"]["shedding"], timeout=15)
        before = len(simulator.requests)
        refused = httpx.post(url + STREAM, json={"message": "echo:new"}, timeout=10)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
        assert len(simulator.requests) == before
        assert httpx.get(url + "/health/ready", timeout=10).status_code == 503  # it turned a chat away just now
        simulator.release("ceiling")
        for reader in readers:
            reader.join(60)
        assert len(bodies) == held and all(_texts(body) == expected for body in bodies)
        # The streams have ended: under the ceiling, new chats are taken again, and readiness is back.
        assert httpx.post(url + STREAM, json={"message": "echo:back"}, timeout=10).status_code == 200
        assert wait_until(lambda: httpx.get(url + "/health/ready", timeout=10).status_code == 200, timeout=15)
        logs = gateway.stop()
        assert "of a core (bound 80%)" in logs and "new connections wait" in logs
        assert "new streams limited to" in logs


def _ready(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(url + "/health/ready", timeout=10).json()
    return body
