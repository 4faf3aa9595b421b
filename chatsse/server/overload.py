"""Shedding under overload: a cheap timer measures how late the event loop wakes (its lag) and how much of a core
the process used over the last second. While the lag is over CHATSSE_MAX_LOOP_LAG_MS, or the CPU share over
CHATSSE_MAX_CPU_PERCENT, new chat requests get `503 overloaded` with `Retry-After` at once, before their body is
read or any upstream called; streams already admitted, and resumes of them, go on; readiness answers 503 so a
balancer moves traffic away. Shedding ends once both have stayed well under their bounds for a second
(hysteresis: it does not flap).

Both signals are needed: a saturated process keeps its loop turning (a 50 ms timer is rarely more than a few
hundred ms late) while new connections wait in the kernel's accept queue for many seconds (bench/overload.py)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from chatsse.errors import Overloaded

TICK_SECONDS = 0.05  # how often the loop's lag is measured
CALM_SECONDS = 1.0  # the lag must stay under half the threshold this long before shedding ends
CPU_WINDOW_SECONDS = 1.0  # the CPU share is over this long
CPU_CALM_MARGIN = 0.15  # shedding on CPU ends under the bound less this
# New replies: what is shed. Resumes (GET .../stream/{id}), stops, models, usage and health are not.
SHED = {
    ("POST", "/api/v1/chat/stream"),
    ("GET", "/api/v1/chat/stream"),
    ("POST", "/api/v1/chat/ui"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
}


class LoopLag:
    """The event loop's lag, measured every TICK_SECONDS, and whether new work is being shed."""

    def __init__(
        self, max_lag: float, measured: Callable[[float], None] = lambda lag: None, max_cpu: float = 0.0
    ) -> None:
        self.max_lag = max_lag  # seconds; 0: not on lag
        self.max_cpu = max_cpu  # a share of one core; 0: not on CPU
        self.measured = measured  # the gauge
        self.lag = 0.0
        self.cpu = 0.0
        self.shedding = False
        self._calm_since: float | None = None
        self._cpu_samples: deque[tuple[float, float]] = deque()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + TICK_SECONDS
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            self.observe(max(0.0, loop.time() - expected), now, self._cpu_share(now, time.thread_time()))

    def _cpu_share(self, now: float, used: float) -> float:
        samples = self._cpu_samples
        samples.append((now, used))
        while now - samples[0][0] > CPU_WINDOW_SECONDS:
            samples.popleft()
        first_at, first_used = samples[0]
        return (used - first_used) / (now - first_at) if now - first_at >= CPU_WINDOW_SECONDS / 2 else 0.0

    def observe(self, lag: float, now: float, cpu: float = 0.0) -> None:
        self.lag, self.cpu = lag, cpu
        self.measured(lag)
        over = (self.max_lag and lag > self.max_lag) or (self.max_cpu and cpu > self.max_cpu)
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.lag.shedding and _new_chat(scope["method"], scope["path"]):
            self.counted()
            await Overloaded(retry_after=1).response_for(scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)


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
