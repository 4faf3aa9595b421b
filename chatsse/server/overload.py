"""Shedding under overload: a cheap timer measures how late the event loop wakes (its lag). While the lag is over
CHATSSE_MAX_LOOP_LAG_MS, new chat requests get `503 overloaded` with `Retry-After` at once, before their body is
read or any upstream called; streams already admitted, and resumes of them, go on; readiness answers 503 so a
balancer moves traffic away. Shedding ends once the lag has stayed under half the threshold for a while
(hysteresis: it does not flap)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from chatsse.errors import Overloaded

TICK_SECONDS = 0.05  # how often the loop's lag is measured
CALM_SECONDS = 1.0  # the lag must stay under half the threshold this long before shedding ends
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

    def __init__(self, max_lag: float, measured: Callable[[float], None] = lambda lag: None) -> None:
        self.max_lag = max_lag  # seconds; 0: never shed
        self.measured = measured  # the gauge
        self.lag = 0.0
        self.shedding = False
        self._calm_since: float | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + TICK_SECONDS
            await asyncio.sleep(TICK_SECONDS)
            self.observe(max(0.0, loop.time() - expected), time.monotonic())

    def observe(self, lag: float, now: float) -> None:
        self.lag = lag
        self.measured(lag)
        if not self.max_lag:
            return
        if lag > self.max_lag:
            self.shedding, self._calm_since = True, None
        elif self.shedding and lag < self.max_lag / 2:
            if self._calm_since is None:
                self._calm_since = now
            elif now - self._calm_since >= CALM_SECONDS:
                self.shedding, self._calm_since = False, None
        else:
            self._calm_since = None


class ShedMiddleware:
    """Refuses new chat requests while the loop lags (`counted` per refusal): the cheapest answer there is."""

    def __init__(self, app: ASGIApp, lag: LoopLag, counted: Callable[[], None]) -> None:
        self.app = app
        self.lag = lag
        self.counted = counted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.lag.shedding and (scope["method"], scope["path"]) in SHED:
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
