"""The app factory: routes, middleware, error rendering and the lifespan that owns the shared upstream client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from chatsse.background import Supervised
from chatsse.callers.alerts import DRAIN_SECONDS as ALERT_DRAIN_SECONDS
from chatsse.callers.alerts import Alerts, in_memory
from chatsse.callers.identity import current_caller
from chatsse.callers.ledger import RATE_HEADERS
from chatsse.errors import ChatSSEError, InternalError, MethodNotAllowed, NotFound
from chatsse.faces.admin import AdminFace
from chatsse.faces.native import NativeFace
from chatsse.faces.openai_compat import OpenAIFace
from chatsse.faces.responses import ResponsesFace
from chatsse.faces.ui_stream import UIStreamFace
from chatsse.preflight import ready_settings
from chatsse.relay import ChatRelay
from chatsse.resume import StreamKeeper
from chatsse.server import protocol
from chatsse.server.access import AccessMiddleware, Keyring
from chatsse.server.collector import Collector, settle, settled
from chatsse.server.cors import BrowserCORS
from chatsse.server.health import Health
from chatsse.server.hooks import stall, tracked_objects
from chatsse.server.lifecycle import DrainOnSigterm, StreamRegistry
from chatsse.server.memory import MemoryReturn
from chatsse.server.metrics import Metrics
from chatsse.server.observe import ObserveMiddleware
from chatsse.server.overload import LoopLag, ShedMiddleware
from chatsse.server.reload import Reloader
from chatsse.server.response import Direct
from chatsse.settings import Settings
from chatsse.shared import shared_state
from chatsse.tracing import NO_TRACING
from chatsse.upstreams import RetryBudget, Upstreams

log = logging.getLogger("chatsse")
STATIC = Path(__file__).parent / "static"
PAGE_POLICY = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


def create_app(settings: Settings) -> Starlette:
    streams = StreamRegistry(settings.max_streams)
    budget = RetryBudget(max_retries=settings.max_retries, max_wait=settings.max_retry_wait)
    tracing = NO_TRACING
    if settings.tracing is not None:
        # Only with tracing on: a gateway without it never loads OpenTelemetry.
        from chatsse.tracing.otel import OtelTracing

        tracing = OtelTracing(settings.tracing)
    upstreams = Upstreams(settings.upstreams, budget, settings.upstream_timeout, settings.ping_seconds, tracing)
    metrics = Metrics()
    alerted = metrics.alerts.labels
    alerts = Alerts(settings.alert_webhook, settings.prices.currency, in_memory(), lambda r: alerted(r).inc())
    state = shared_state(settings, metrics, alerts)
    remote, ledger, stored, limiter = state.remote, state.ledger, state.stored, state.limiter
    keeper = None
    if settings.resume_seconds:
        keeper = StreamKeeper(settings.resume_seconds, settings.resume_max_bytes, streams, metrics, remote)
    relay = ChatRelay(settings, streams, upstreams, keeper, ledger, metrics, stored)
    native, ui, openai, responses = NativeFace(relay), UIStreamFace(relay), OpenAIFace(relay), ResponsesFace(relay)
    admin = AdminFace(relay)
    alerting = Supervised("budget-alerts", alerts.run, metrics.background_failed)  # idle until a budget is crossed
    metrics.watch(streams, keeper)
    drain = DrainOnSigterm(streams, settings.drain_seconds)
    memory = MemoryReturn(streams, metrics.memory_returns.inc, background_failed=metrics.background_failed)
    collector = Collector(streams, settings.gc_max_growth_mb, lambda reason: metrics.gc_passes.labels(reason).inc())
    collecting = Supervised("collector", collector.run, metrics.background_failed)

    def background() -> list[Supervised]:
        loops = [*(remote.supervised if remote is not None else ()), alerting, watching, lagging, collecting]
        return [loop for loop in (*loops, memory.supervised) if loop is not None and loop.task is not None]

    def accepted() -> int:
        # Workers share one listening socket and its queue; each takes about its share of the connections.
        return protocol.GuardedHttpProtocol.accepted * protocol.GuardedHttpProtocol.sharing

    def open_streams() -> int:
        return streams.count

    lag = LoopLag(
        settings.max_loop_lag_ms / 1000,
        metrics.loop_lag.set,
        settings.max_cpu_percent / 100,
        accepted,
        open_streams,
        metrics.stream_ceiling.set,
    )
    lagging = Supervised("loop-lag", lag.run, metrics.background_failed)
    health = Health(streams, upstreams, background, lag)
    keyring = Keyring(settings)

    def apply(new: Settings) -> None:
        """A reloaded configuration, each part taking its own; requests in flight keep what they started with."""
        upstreams.reconfigure(new.upstreams)  # first: it refuses what needs a restart
        keyring.configure(new)
        relay.reconfigure(new)
        alerts.currency = new.prices.currency

    reloaded = metrics.config_reloads.labels
    reloader = Reloader(settings, apply, lambda r: reloaded(r).inc(), settings.config_check_seconds)
    watching = Supervised("config-watch", reloader.watch, metrics.background_failed)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with upstreams.running():
            if remote is not None:
                remote.start(keeper.stop_here if keeper is not None else None)
            drain.install()
            memory.start()
            alerting.start()
            lagging.start()
            if settled():  # a serving process (see settle): its older generations are this loop's
                collecting.start()
            if settings.config_path is not None:
                reloader.install()
                if settings.config_check_seconds:
                    watching.start()
            health.started = True
            metrics.started()
            try:
                yield
            finally:
                await alerts.drained(ALERT_DRAIN_SECONDS)
                reloader.uninstall()
                for loop in (alerting, watching, lagging, collecting):
                    if loop.task is not None:
                        loop.task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await loop.task
                await memory.stop()
                await relay.safety.aclose()
                drain.uninstall()
                if keeper is not None:
                    await keeper.close()
                if remote is not None:
                    await remote.close()
                await tracing.shutdown()

    async def models(request: Request) -> Response:
        return JSONResponse({"models": relay.models_for(current_caller.get())})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # The routes that stream are Direct: no exception-handling layer of Starlette's own around each (see Direct).
    routes: list[BaseRoute] = [
        Route("/health", health.health, methods=["GET"]),
        Route("/health/live", health.live, methods=["GET"]),
        Route("/health/ready", health.ready, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/api/v1/chat/stream", Direct(native.stream), methods=["GET", "POST"]),
        Route("/api/v1/chat/stream/{stream_id}", Direct(native.resume), methods=["GET"]),
        Route("/api/v1/chat/stream/{stream_id}", native.stop, methods=["DELETE"]),
        Route("/api/v1/models", models, methods=["GET"]),
        Route("/api/v1/usage", native.usage, methods=["GET"]),
        Route("/api/v1/admin/usage", admin.usage, methods=["GET"]),
        Route("/api/v1/chat/ui", Direct(ui.chat), methods=["POST"]),
        Route("/api/v1/chat/ui/{chat_id}/stream", Direct(ui.resume), methods=["GET"]),
        Route("/api/v1/chat/ui/{chat_id}/stream", ui.stop, methods=["DELETE"]),
        Route("/v1/chat/completions", Direct(openai.completions), methods=["POST"]),
        Route("/openai/deployments/{deployment}/chat/completions", Direct(openai.completions), methods=["POST"]),
        Route("/v1/models", openai.models, methods=["GET"]),
        Route("/v1/responses", Direct(responses.create), methods=["POST"]),
        Route("/v1/responses/{response_id}", responses.retrieve, methods=["GET", "DELETE"]),
        Route("/v1/responses/{response_id}/cancel", responses.cancel, methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", responses.input_items, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if settings.web_ui:
        routes.append(Route("/", _page, methods=["GET"]))
    if settings.test_hooks:
        routes.append(Route("/_test/stall", stall, methods=["POST"]))
        routes.append(Route("/_test/objects", tracked_objects))

    log_format = settings.log_format
    if log_format == "auto":
        log_format = "text" if sys.stderr.isatty() else "json"
    return Starlette(
        routes=routes,
        # Outermost first: every response (401s and CORS refusals included) gets a request id and a log line,
        # and the browser can read our errors because CORS wraps the access checks.
        middleware=[
            Middleware(
                ObserveMiddleware,
                metrics=metrics,
                log_format=log_format,
                internal_error=_internal_error,
                tracing=tracing,
            ),
            Middleware(
                BrowserCORS,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=["Retry-After", "X-Request-ID", "X-Chatsse-Upstream", "X-Chatsse-Stream", *RATE_HEADERS],
            ),
            Middleware(ShedMiddleware, lag=lag, counted=metrics.shed.inc),  # inside CORS: browsers read the 503
            Middleware(AccessMiddleware, settings=settings, limiter=limiter, keyring=keyring),
        ],
        exception_handlers={
            ChatSSEError: _render_error,
            HTTPException: _render_http_exception,
        },
        lifespan=lifespan,
    )


async def _page(request: Request) -> Response:
    # The page talks only to this origin and renders replies as text; the policy makes injected markup inert.
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})


async def _render_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatSSEError)
    return exc.response_for(request.url.path)


async def _render_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: ChatSSEError
    if exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}.")
    elif exc.status_code == 404:
        error = NotFound()
    else:
        error = InternalError()
    response = error.response_for(request.url.path)
    response.headers.update(exc.headers or {})
    return response


def _internal_error(path: str) -> Response:
    return InternalError().response_for(path)


def serving_app(settings: Settings) -> Starlette:
    """The app as a serving process runs it: this process's connection bounds set, the collector settled."""
    protocol.configure(settings)  # read by the HTTP protocol `chatsse serve` runs
    app = create_app(settings)
    settle()  # a serving process only: tests build many apps in one process
    return app


def factory() -> Starlette:
    """`uvicorn chatsse.app:factory --factory`: settings from the environment, or a clear message and exit 2."""
    return serving_app(ready_settings())


def __getattr__(name: str) -> Starlette:
    # `chatsse.app:app` is built on first access, so importing this module never needs settings.
    if name == "app":
        return factory()
    raise AttributeError(name)
