"""The probes: `/health` (as it always was), `/health/live` (the process answers) and `/health/ready` (send it
traffic: started, not draining, not shedding, no background loop failing). None needs a key or shows a secret."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatsse import __version__
from chatsse.background import Supervised
from chatsse.server.lifecycle import StreamRegistry
from chatsse.server.overload import LoopLag
from chatsse.upstreams import Upstreams


class Health:
    def __init__(
        self,
        streams: StreamRegistry,
        upstreams: Upstreams,
        background: Callable[[], Iterable[Supervised]],
        lag: LoopLag | None = None,
    ) -> None:
        self.streams = streams
        self.lag = lag
        self.upstreams = upstreams
        self.background = background  # the supervised loops running now
        self.started = False  # the lifespan's start-up is done

    async def health(self, request: Request) -> Response:
        if self.streams.draining:
            return JSONResponse({"status": "draining", "version": __version__}, status_code=503)
        return JSONResponse(
            {"status": "healthy", "version": __version__, "resting_upstreams": self.upstreams.resting()}
        )

    async def live(self, request: Request) -> Response:
        """A Kubernetes liveness probe: 200 while the process answers, draining included (a restart would cut the
        streams the drain is finishing). It touches neither Redis nor an upstream."""
        return JSONResponse({"status": "alive", "version": __version__})

    async def ready(self, request: Request) -> Response:
        """A readiness probe: 503 while starting, draining after SIGTERM, shedding (the loop lags), or while a
        background loop keeps failing (a balancer sends traffic elsewhere); 200 otherwise. The body says what was
        checked."""
        background = {loop.name: "failing" if loop.failing else "ok" for loop in self.background()}
        checks: dict[str, object] = {"started": self.started, "draining": self.streams.draining}
        checks["background"] = background
        if self.lag is not None:
            checks["loop_lag_ms"], checks["shedding"] = round(self.lag.lag * 1000, 1), self.lag.shedding
            checks["cpu_percent"], checks["accept_queue"] = round(self.lag.cpu * 100), self.lag.queue
            checks["accept_wait_ms"] = round(min(self.lag.wait, 3600.0) * 1000, 1)
            if self.lag.ceiling is not None:  # the streams taken since an overload of the core (null: no bound)
                checks["stream_ceiling"] = self.lag.ceiling.limit
        if not self.started:
            status = "starting"
        elif self.streams.draining:
            status = "draining"
        elif self.lag is not None and self.lag.overloaded(time.monotonic()):
            status = "overloaded"
        elif "failing" in background.values():
            status = "failing"
        else:
            status = "ready"
        body = {"status": status, "version": __version__, "checks": checks}
        return JSONResponse(body, status_code=200 if status == "ready" else 503)
