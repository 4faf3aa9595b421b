"""Connections that never become requests, against the real `chatsse serve`: a deadline for headers, a cap on
connections, and a normal stream unharmed by either."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from chatsse.server.protocol import HEADROOM_FDS
from chatsse.simulator import Simulator
from tests.servers import chatsse_serve, healthy, wait_until


@contextmanager
def serving(tmp_path: Path, file_limit: int | None = None, **settings: str) -> Iterator[tuple[int, Simulator]]:
    """`chatsse serve` with a simulator upstream and these settings (and file limit), until exit."""
    simulator = Simulator()
    simulator.start_in_thread()
    try:
        with chatsse_serve(
            tmp_path,
            simulator.url,
            file_limit=file_limit,
            capture_stderr=False,
            env={"CHATSSE_PING_SECONDS": "0", **settings},
        ) as gateway:
            yield gateway.port, simulator
    finally:
        simulator.stop_thread()


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[int, Simulator]]:
    with serving(tmp_path, CHATSSE_HEADER_TIMEOUT="1", CHATSSE_MAX_CONNECTIONS="30") as running:
        yield running


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


def test_by_default_every_admitted_stream_has_a_file_left_for_its_upstream(tmp_path: Path) -> None:
    """Without CHATSSE_MAX_CONNECTIONS the cap comes from the file limit, and each stream also holds a connection
    to its upstream: streams are refused with 503 before the process runs out of files, never with a 502."""
    limit = 400
    request = _raw_chat("echo:one two three [sim: hold_after=1 hold=never]")
    held: list[socket.socket] = []
    with serving(tmp_path, file_limit=limit) as (port, _):
        try:
            for _ in range(limit):  # bounded: the cap is below the limit
                sock = socket.create_connection(("127.0.0.1", port))
                sock.settimeout(10)
                held.append(sock)
                sock.sendall(request)
                try:
                    answer = _read_until(sock, b"}\n\n", b"\r\n\r\n{")
                except ConnectionResetError:  # refused and closed before our request arrived
                    answer = b""
                if not answer.startswith(b"HTTP/1.1 200"):
                    break
                assert b'data: {"content":"one"}\n\n' in answer
            with socket.create_connection(("127.0.0.1", port)) as extra:  # says nothing, so it reads the refusal
                extra.settimeout(10)
                refusal = _read_all(extra)
            assert refusal.startswith(b"HTTP/1.1 503") and b"too_many_connections" in refusal
            assert len(held) - 1 == (limit - HEADROOM_FDS) // 2
        finally:
            for sock in held:
                sock.close()


def _raw_chat(message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    head = (
        f"POST /api/v1/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    )
    return head.encode() + b"\r\n\r\n" + body


def _read_until(sock: socket.socket, *markers: bytes) -> bytes:
    data = b""
    while not any(marker in data for marker in markers):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
