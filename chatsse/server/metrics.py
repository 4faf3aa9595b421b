"""The app's Prometheus metrics: every series chatsse keeps, in a registry of its own, and their exposition (summed
over workers when there are several)."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from chatsse.record import RequestRecord, current_record
from chatsse.server.genai_metrics import GenAIMetrics

# Set by `chatsse serve --workers N` (N > 1) before the workers start; prometheus-client then keeps values in files.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
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
        self.guard_actions = Counter(
            "chatsse_guard_actions",
            "What guards did: by guard, action (block, redact, flag) and side (input, output).",
            ["guard", "action", "on"],
            registry=r,
        )
        self.guard_failures = Counter(
            "chatsse_guard_failures",
            "Guard services (Azure AI Content Safety) that failed or timed out, by guard; its on_error decided.",
            ["guard"],
            registry=r,
        )
        most: dict[str, Any] = {"multiprocess_mode": "livemax"} if MULTIPROCESS else {}
        self.loop_lag = Gauge(
            "chatsse_loop_lag_seconds", "How late the event loop woke, last measured.", registry=r, **most
        )
        self.stream_ceiling = Gauge(
            "chatsse_stream_ceiling",
            "The most streams taken since an overload of the core (0: no ceiling); with workers, summed.",
            registry=r,
            **live,
        )
        self.shed = Counter(
            "chatsse_shed",
            "New chat requests refused (503 overloaded): while shedding, or at the ceiling an overload left.",
            registry=r,
        )
        self.gc_passes = Counter(
            "chatsse_gc_passes",
            "Passes over the collector's older generations, by reason: lull (few streams open) or growth (the process "
            "grew CHATSSE_GC_MAX_GROWTH_MB since the last).",
            ["reason"],
            registry=r,
        )
        for reason in ("lull", "growth"):
            self.gc_passes.labels(reason)  # shown at 0 from the start
        self.gc_frozen = Gauge(
            "chatsse_gc_frozen_objects",
            "Objects moved out of the collector's sight at start-up (gc.freeze).",
            registry=r,
        )
        self.gc_frozen.set_function(gc.get_freeze_count)
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

    def guard_acted(self, guard: Any, side: str) -> None:
        """A guard acted on a request's input or its reply: counted, and named on its log line (never the text)."""
        self.guard_actions.labels(guard.name, guard.action, side).inc()
        record = current_record.get()
        if record is not None:
            record.guards = [*(record.guards or []), f"{guard.name}:{guard.action}:{side}"]

    def started(self) -> None:
        """The app's start-up is over (the collector was settled before it): what the gauges can say once."""
        self.gc_frozen.set(gc.get_freeze_count())

    def guard_failed(self, guard: Any) -> None:
        self.guard_failures.labels(guard.name).inc()

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
