"""Shedding under overload: a cheap timer measures how late the event loop wakes (its lag), how much of a core the
loop's thread used over the last second, and how long new connections wait in the kernel's accept queue. While the
lag is over CHATSSE_MAX_LOOP_LAG_MS, or the CPU share is over CHATSSE_MAX_CPU_PERCENT while they wait, new
chat requests get `503 overloaded` with `Retry-After` at once, before their body is read or any upstream called;
streams already admitted, and resumes of them, go on; readiness answers 503 so a balancer moves traffic away.
Shedding ends once both have stayed well under their bounds for a second (hysteresis: it does not flap).

Why these signals: a saturated process keeps its loop turning (a 50 ms timer is rarely more than 100 ms late) while
new connections wait in the accept queue for many seconds; and a busy core alone is no overload (a burst of new
streams, or steady work near capacity, is served on time). Figures: bench/REPORT.md, "Under overload"."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from chatsse.errors import Overloaded

TICK_SECONDS = 0.05  # how often the loop's lag is measured
CALM_SECONDS = 1.0  # the lag must stay under half the threshold this long before shedding ends
CPU_WINDOW_SECONDS = 1.0  # the CPU share is over this long
CPU_CALM_MARGIN = 0.15  # shedding on CPU ends under the bound less this
QUEUE_FLOOR = 16  # fewer in the accept queue are no backlog
MAX_ACCEPT_WAIT = 0.1  # seconds a new connection may wait to be accepted before a busy core counts as overloaded
TCP_LISTEN = 10  # tcp_info's tcpi_state of a listening socket
# New replies: what is shed. Resumes (GET .../stream/{id}), stops, models, usage and health are not.
SHED = {
    ("POST", "/api/v1/chat/stream"),
    ("GET", "/api/v1/chat/stream"),
    ("POST", "/api/v1/chat/ui"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
}


class AcceptQueue:
    """How many connections wait in the kernel's accept queue of this process's listening TCP sockets (Linux's
    TCP_INFO on a listening socket: `tcpi_unacked`). Where a saturated process falls behind first: new connections
    wait there for seconds while its loop still turns. Found once they exist (uvicorn listens after start-up)."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self._looked_at = -1.0

    def length(self, now: float) -> int | None:
        """Connections waiting, or None where that cannot be read (no listening socket found, not Linux)."""
        if not self.fds and now - self._looked_at >= 1.0 and sys.platform == "linux":
            self._looked_at = now
            self.fds = [fd for fd in _socket_fds() if _listening(fd)]
        waiting = 0
        for fd in self.fds:
            info = _tcp_info(fd)
            if info is None or info[0] != TCP_LISTEN:  # closed, or the number reused: look again later
                self.fds = []
                return None
            waiting += struct.unpack_from("I", info, 24)[0]  # tcpi_unacked: the accept queue, on a listener
        return waiting if self.fds else None


def _socket_fds() -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                found.append(int(name))
    return found


def _listening(fd: int) -> bool:
    info = _tcp_info(fd)
    return info is not None and info[0] == TCP_LISTEN


def _tcp_info(fd: int) -> bytes | None:
    """The socket's TCP_INFO, read without taking the descriptor over (None: not a TCP socket any more)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    except OSError:
        return None
    finally:
        sock.detach()


class LoopLag:
    """The event loop's lag, measured every TICK_SECONDS, and whether new work is being shed."""

    def __init__(
        self,
        max_lag: float,
        measured: Callable[[float], None] = lambda lag: None,
        max_cpu: float = 0.0,
        accepted: Callable[[], int] | None = None,
    ) -> None:
        self.max_lag = max_lag  # seconds; 0: not on lag
        self.max_cpu = max_cpu  # a share of one core; 0: not on CPU
        # How many connections this process has accepted so far: with the accept queue, how long a new one waits.
        # None: shed on the CPU share alone.
        self.accepted = accepted
        self.measured = measured  # the gauge
        self.lag = 0.0
        self.cpu = 0.0
        self.queue = 0  # connections waiting to be accepted
        self.wait = 0.0  # and how long the last of them will wait at the rate they are accepted (seconds)
        self.shedding = False
        self._calm_since: float | None = None
        self._cpu_samples: deque[tuple[float, float]] = deque()
        self._accepted_samples: deque[tuple[float, int]] = deque()
        self._accept_queue = AcceptQueue()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + TICK_SECONDS
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            cpu = self._cpu_share(now, time.thread_time()) if self.max_cpu else 0.0
            wait = self._accept_wait(now) if self.max_cpu and self.accepted is not None else None
            self.observe(max(0.0, loop.time() - expected), now, cpu, wait)

    def _accept_wait(self, now: float) -> float | None:
        """How long a connection arriving now would wait to be accepted: the queue before it, at the rate this
        process accepted connections over the last second (None: the queue cannot be read)."""
        assert self.accepted is not None
        queue = self._accept_queue.length(now)
        samples = self._accepted_samples
        samples.append((now, self.accepted()))
        while now - samples[0][0] > CPU_WINDOW_SECONDS:
            samples.popleft()
        if queue is None:
            return None
        self.queue = queue
        if queue < QUEUE_FLOOR:
            return 0.0
        first_at, first_count = samples[0]
        rate = (samples[-1][1] - first_count) / (now - first_at) if now > first_at else 0.0
        return queue / rate if rate > 0 else float("inf")

    def _cpu_share(self, now: float, used: float) -> float:
        samples = self._cpu_samples
        samples.append((now, used))
        while now - samples[0][0] > CPU_WINDOW_SECONDS:
            samples.popleft()
        first_at, first_used = samples[0]
        return (used - first_used) / (now - first_at) if now - first_at >= CPU_WINDOW_SECONDS / 2 else 0.0

    def observe(self, lag: float, now: float, cpu: float = 0.0, wait: float | None = None) -> None:
        """One reading: the loop's lag, the CPU share, and how long a new connection waits to be accepted (None:
        not known)."""
        self.lag, self.cpu, self.wait = lag, cpu, wait or 0.0
        self.measured(lag)
        # A busy core alone is no overload (a burst of new streams, or steady work near capacity, is served on
        # time); a busy core that leaves new connections waiting to be accepted is one.
        behind = wait is None or wait > MAX_ACCEPT_WAIT
        over = (self.max_lag and lag > self.max_lag) or (self.max_cpu and cpu > self.max_cpu and behind)
        calm_lag = not self.max_lag or lag < self.max_lag / 2
        calm = calm_lag and (not self.max_cpu or cpu < self.max_cpu - CPU_CALM_MARGIN)
        if over:
            self.shedding, self._calm_since = True, None
        elif self.shedding and calm:
            if self._calm_since is None:
                self._calm_since = now
            elif now - self._calm_since >= CALM_SECONDS:
                self.shedding, self._calm_since = False, None
        else:
            self._calm_since = None


def _new_chat(method: str, path: str) -> bool:
    return (method, path) in SHED or (method == "POST" and path.startswith("/openai/deployments/"))


class ShedMiddleware:
    """Refuses new chat requests while the loop lags (`counted` per refusal): the cheapest answer there is."""

    def __init__(self, app: ASGIApp, lag: LoopLag, counted: Callable[[], None]) -> None:
        self.app = app
        self.lag = lag
        self.counted = counted

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: an admitted request's own call is returned, so its stream holds no frame of this.
        if scope["type"] == "http" and self.lag.shedding and _new_chat(scope["method"], scope["path"]):
            self.counted()
            return Overloaded(retry_after=1).response_for(scope["path"])(scope, receive, send)
        return self.app(scope, receive, send)


async def stall(request: Request) -> Response:
    """`POST /_test/stall?ms=N&seconds=S`, with CHATSSE_TEST_HOOKS=true only: block the event loop N ms at a time for
    S seconds, as a saturated core would, so that tests can watch shedding start and end."""
    block, seconds = (
        float(request.query_params.get("ms", "300")) / 1000,
        float(request.query_params.get("seconds", "2")),
    )

    async def stalls() -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            time.sleep(block)  # on purpose: the loop can do nothing else meanwhile
            await asyncio.sleep(0.01)

    request.app.state.stall = asyncio.get_running_loop().create_task(stalls())
    return JSONResponse({"stalling_ms": block * 1000, "for_seconds": seconds}, status_code=202)


async def tracked_objects(request: Request) -> Response:
    """`GET /_test/objects`, with CHATSSE_TEST_HOOKS=true only: after a full collection, how many objects the cyclic
    collector tracks (those frozen at start-up not counted), so that tests can bound what an open stream holds."""
    gc.collect()
    tracked = gc.get_objects()
    body: dict[str, object] = {"tracked": len(tracked), "threshold": gc.get_threshold()}
    if request.query_params.get("by") == "type":  # and how many of each type, for finding what a stream holds
        counted = Counter(type(obj).__qualname__ for obj in tracked)
        body["by_type"] = dict(counted.most_common())
    return JSONResponse(body)
