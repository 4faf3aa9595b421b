"""Seeing what happens: request ids, one structured log line per request, and Prometheus metrics."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsse.record import RequestRecord, current_record
from chatsse.server.genai_metrics import GenAIMetrics
from chatsse.tracing import NO_TRACING, Tracing

log = logging.getLogger("chatsse.access")
# Set by `chatsse serve --workers N` (N > 1) before the workers start; prometheus-client then keeps values in files.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
bug_log = logging.getLogger("chatsse.bug")
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
ROUTES = (
    "/api/v1/chat/stream",
    "/api/v1/chat/ui",
    "/api/v1/models",
    "/api/v1/usage",
    "/v1/chat/completions",
    "/v1/models",
    "/v1/responses",
    "/health",
    "/metrics",
    "/",
)
# The routes with a path parameter, by their fixed start: their template is the label (a bounded set of values).
TEMPLATES = (
    ("/api/v1/chat/stream/", "/api/v1/chat/stream/{stream_id}"),
    ("/api/v1/chat/ui/", "/api/v1/chat/ui/{chat_id}/stream"),
)
RESTING_CODES = ("rate_limited", "upstream_unavailable", "upstream_unreachable")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The app's metrics in a registry of its own (several apps can live in one process, as in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("chatsse_requests", "Requests by route and status.", ["route", "status"], registry=r)
        live: dict[str, Any] = {"multiprocess_mode": "livesum"} if MULTIPROCESS else {}
        self.active_streams = Gauge("chatsse_active_streams", "Streams open right now.", registry=r, **live)
        self.streams_kept = Gauge("chatsse_streams_kept", "Replies kept for resuming.", registry=r, **live)
        self.streams_detached = Gauge(
            "chatsse_streams_detached", "Kept replies still read with no client.", registry=r, **live
        )
        self.resumes = Counter("chatsse_resumes", "Streams resumed.", registry=r)
        self.resume_gaps = Counter("chatsse_resume_gaps", "Resumes refused: events already dropped.", registry=r)
        self.redis_failures = Counter(
            "chatsse_redis_failures", "Redis calls that failed (writes held back, checks failed open).", registry=r
        )
        self.resume_writes_refused = Counter(
            "chatsse_resume_writes_refused",
            "Kept-reply writes Redis refused (out of memory, a wrong type): not sent again.",
            registry=r,
        )
        self.resume_events_shed = Counter(
            "chatsse_resume_events_shed",
            "Kept-reply events not written to Redis: its write queue was full (CHATSSE_RESUME_QUEUE_BYTES).",
            registry=r,
        )
        self.resume_queue_bytes = Gauge(
            "chatsse_resume_queue_bytes", "Bytes of kept-reply events waiting for Redis.", registry=r, **live
        )
        self.ttft = Histogram(
            "chatsse_time_to_first_token_seconds",
            "Request start to first upstream token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "chatsse_request_duration_seconds", "Whole request, stream included.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.upstream_errors = Counter("chatsse_upstream_errors", "Upstream failures by code.", ["code"], registry=r)
        self.retries = Counter("chatsse_upstream_retries", "Upstream requests retried.", registry=r)
        self.disconnects = Counter("chatsse_client_disconnects", "Clients that left mid-stream.", registry=r)
        self.background_failures = Counter(
            "chatsse_background_failures",
            "Background tasks that raised and were started again, by task.",
            ["task"],
            registry=r,
        )
        self.admissions_unchecked = Counter(
            "chatsse_admissions_unchecked",
            "Requests let through because their caller's limits could not be read within a second.",
            registry=r,
        )
        self.memory_returns = Counter(
            "chatsse_memory_returns", "Heap collections and trims after a peak of streams.", registry=r
        )
        self.cost = Counter(
            "chatsse_cost_micros",
            "What replies cost, in micro-units of the [[price]] tables' currency, by caller and priced model.",
            ["caller", "model", "currency"],
            registry=r,
        )
        self.config_reloads = Counter(
            "chatsse_config_reloads",
            "Reloads of the CHATSSE_CONFIG file (SIGHUP or a change of its content), by result: applied, invalid (the "
            "running configuration stayed), unchanged.",
            ["result"],
            registry=r,
        )
        self.alerts = Counter(
            "chatsse_alerts",
            "Budget alerts by result: sent, failed (after its retries), logged (no CHATSSE_ALERT_WEBHOOK), dropped "
            "(the queue was full), duplicate (another instance sent it).",
            ["result"],
            registry=r,
        )
        self.upstream_requests = Counter(
            "chatsse_upstream_requests",
            "Upstream attempts by upstream and outcome.",
            ["upstream", "outcome"],
            registry=r,
        )
        self.upstream_cooldowns = Counter(
            "chatsse_upstream_cooldowns", "Upstreams put to rest, by reason.", ["upstream", "reason"], registry=r
        )
        self.upstream_ttft = Histogram(
            "chatsse_upstream_time_to_first_token_seconds",
            "Request start to first token, by the upstream that served it.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "chatsse_tokens",
            "Tokens of replies by caller, model group and type (prompt, completion, or estimated where the upstream "
            "sent no usage).",
            ["caller", "model", "type"],
            registry=r,
        )
        self.genai = GenAIMetrics(r)
        self.refusals = Counter(
            "chatsse_refusals",
            "Requests a caller's limits refused, by caller and reason (the error code).",
            ["caller", "reason"],
            registry=r,
        )

    def background_failed(self, task: str) -> None:
        self.background_failures.labels(task).inc()

    def watch(self, streams: Counted, keeper: Any) -> None:
        """Gauges read from the parts that keep the counts: at each scrape, or (several workers) on each change."""
        self._sources = (streams, keeper)
        if MULTIPROCESS:
            streams.on_change = self.refresh
            if keeper is not None:
                keeper.on_change = self.refresh
        else:
            self.active_streams.set_function(lambda: streams.count)
            if keeper is not None:
                self.streams_kept.set_function(lambda: len(keeper.streams))
                self.streams_detached.set_function(lambda: keeper.detached)

    def refresh(self) -> None:
        streams, keeper = self._sources
        self.active_streams.set(streams.count)
        if keeper is not None:
            self.streams_kept.set(len(keeper.streams))
            self.streams_detached.set(keeper.detached)

    def observe(self, record: RequestRecord) -> None:
        self.requests.labels(record.route, str(record.status)).inc()
        self.duration.observe(record.duration_ms / 1000)
        if record.ttft_ms is not None:
            self.ttft.observe(record.ttft_ms / 1000)
            if record.upstream is not None:
                self.upstream_ttft.labels(record.upstream).observe(record.ttft_ms / 1000)
        for attempt in record.attempts:
            upstream, _, outcome = attempt.rpartition(":")
            self.upstream_requests.labels(upstream, outcome).inc()
            if outcome in RESTING_CODES:
                self.upstream_cooldowns.labels(
                    upstream, "rate_limited" if outcome == "rate_limited" else "circuit"
                ).inc()
        if record.error_code and record.error_code.startswith(("upstream_", "content_filter", "rate_limited")):
            self.upstream_errors.labels(record.error_code).inc()
        if record.retries:
            self.retries.inc(record.retries)
        if record.client_disconnected:
            self.disconnects.inc()

    def exposition(self) -> bytes:
        if not MULTIPROCESS:
            return generate_latest(self.registry)
        # Several workers: every worker's values, summed, whichever worker answers the scrape.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class Counted(Protocol):
    on_change: Callable[[], None] | None

    @property
    def count(self) -> int: ...


def route_of(path: str) -> str:
    """The route a path belongs to (a template where it has a parameter), for labels and span names."""
    if path in ROUTES:
        return path
    if path.startswith("/static/"):
        return "/static"
    for start, template in TEMPLATES:
        if path.startswith(start):
            return template
    if path.startswith("/v1/responses/"):  # a stored response's calls
        action = path.rpartition("/")[2]
        return "/v1/responses/{response_id}" + (f"/{action}" if action in ("cancel", "input_items") else "")
    return "other"


def format_line(record: RequestRecord, fmt: str) -> str:
    # Once per request: a shallow copy (asdict copies deeply) and orjson (several times stdlib json's speed).
    fields = dict(vars(record))
    del fields["started"], fields["completed"]
    if fmt == "json":
        return orjson.dumps(fields).decode()
    return " ".join(f"{key}={value}" for key, value in fields.items() if value not in (None, "-", 0, False))


class ObserveMiddleware:
    """Gives every request an id (the client's X-Request-ID if valid), returns it, and logs and counts the request."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        log_format: str,
        internal_error: Callable[[str], ASGIApp],
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log_format = log_format
        self.internal_error = internal_error  # the 500 response, rendered by errors.py (which imports this module)
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if VALID_REQUEST_ID.match(given) else os.urandom(16).hex()
        path = scope["path"]
        record = RequestRecord(request_id, scope["method"], route_of(path))
        route = record.route
        token = current_record.set(record)
        span = self.tracing.server(scope, record)  # the whole request, its stream included

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record.completed = True
            await send(message)

        async def receive_watching() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and record.status and not record.completed:
                record.client_disconnected = True
            return message

        try:
            await self.app(scope, receive_watching, send_with_id)
        except Exception as exc:
            # A bug, not the client's doing: one traceback, and the response is traced like every other one.
            record.exception = type(exc).__name__
            bug_log.exception("unexpected %s on %s (request %s)", record.exception, route, request_id)
            if not record.status:
                await self.internal_error(path)(scope, receive, send_with_id)
        finally:
            record.duration_ms = round((time.perf_counter() - record.started) * 1000, 2)
            span.finish(record)
            current_record.reset(token)
            if route != "/static":
                self.metrics.observe(record)
                log.info(format_line(record, self.log_format))
