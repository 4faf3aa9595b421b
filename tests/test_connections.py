"""Connections that never become requests, against the real `chatsse serve`: a deadline for headers, a cap on
connections, and a normal stream unharmed by either."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatsse.simulator import Simulator
from tests.servers import clean_env, free_port, healthy, wait_until

CHATSSE = str(Path(sys.executable).with_name("chatsse"))


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[int, Simulator]]:
    simulator = Simulator()
    port = free_port()
    env = clean_env()
    env.update(
        AZURE_OPENAI_ENDPOINT=simulator.start_in_thread(),
        AZURE_OPENAI_API_KEY="k",
        AZURE_OPENAI_DEPLOYMENT_NAME="d",
        CHATSSE_HEADER_TIMEOUT="1",
        CHATSSE_MAX_CONNECTIONS="30",
        CHATSSE_PING_SECONDS="0",
    )
    process = subprocess.Popen(
        [CHATSSE, "serve", "--port", str(port)], cwd=tmp_path, env=env, stderr=subprocess.DEVNULL
    )
    try:
        assert wait_until(lambda: healthy(f"http://127.0.0.1:{port}"), timeout=20, interval=0.1)
        yield port, simulator
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(20)
        simulator.stop_thread()


def _stream(port: int, into: list[dict[str, object]]) -> None:
    body = {"message": "echo:" + " ".join(f"w{i}" for i in range(25)) + "[sim: delay=0.1]"}
    with httpx.stream("POST", f"http://127.0.0.1:{port}/api/v1/chat/stream", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                into.append(json.loads(line[6:]))


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_slow_headers_are_cut_off_and_excess_connections_refused_while_a_stream_goes_on(
    guarded: tuple[int, Simulator],
) -> None:
    port, _ = guarded
    events: list[dict[str, object]] = []
    streaming = threading.Thread(target=_stream, args=(port, events))
    streaming.start()
    assert wait_until(lambda: len(events) >= 1)

    slow = []
    for _ in range(20):  # headers started, never finished
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /api/v1/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        sock.settimeout(10)
        slow.append(sock)
    started = time.monotonic()
    answers = [_read_all(sock) for sock in slow]  # each ends when the server closes it
    assert time.monotonic() - started < 5  # safety net: closed after the 1 s deadline, not held forever
    assert all(answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer for answer in answers)

    idle = []
    for _ in range(40):  # a flood of connections that say nothing
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(10)
        idle.append(sock)
    refused = [a for a in (_read_all(s) for s in idle[-10:]) if a.startswith(b"HTTP/1.1 503")]
    assert refused and all(b"too_many_connections" in a and b"retry-after: 1" in a for a in refused)
    for sock in slow + idle:
        sock.close()

    streaming.join(30)
    assert events[-1].get("done") is True
    assert "".join(str(e.get("content", "")) for e in events) == " ".join(f"w{i}" for i in range(25))
    assert wait_until(
        lambda: healthy(f"http://127.0.0.1:{port}"), timeout=5
    )  # and it serves again once the flood is gone
