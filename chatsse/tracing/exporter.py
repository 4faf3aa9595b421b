"""Where spans go, and chatsse's own OTLP/HTTP span exporter: `otlp.py`'s encoder, POSTed with httpx, retried as
the OTLP specification asks (429, 502, 503, 504 and lost connections, backing off, honouring Retry-After, within the
timeout). It replaces nothing in the SDK's modules: another OTLP exporter in the process keeps its own encoder."""

from __future__ import annotations

import gzip
import logging
import threading
import time
from collections.abc import Sequence

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from chatsse import __version__
from chatsse.tracing.config import TracingConfig
from chatsse.tracing.otlp import encode_spans

log = logging.getLogger("chatsse")

RETRYABLE = frozenset({429, 502, 503, 504})
FIRST_BACKOFF_SECONDS = 1.0


class OtlpHttpExporter(SpanExporter):
    """Sends batches of spans to an OTLP/HTTP traces endpoint (the BatchSpanProcessor's thread calls `export`)."""

    def __init__(
        self,
        endpoint: str,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        compression: str = "",
        certificate: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.gzip = compression == "gzip"
        fixed = {"content-type": "application/x-protobuf", "user-agent": f"chatsse/{__version__}"}
        if self.gzip:
            fixed["content-encoding"] = "gzip"
        # Not in any log or error: the headers may hold the collector's key.
        self.client = httpx.Client(headers={**(headers or {}), **fixed}, verify=certificate or True, timeout=timeout)
        self._closed = threading.Event()  # also what a backoff waits on, so a shutdown ends it
        self._failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed.is_set():
            return SpanExportResult.FAILURE
        body = encode_spans(spans).SerializePartialToString()
        if self.gzip:
            body = gzip.compress(body)
        deadline, backoff = time.monotonic() + self.timeout, FIRST_BACKOFF_SECONDS
        while True:
            wait: float | None = backoff
            try:
                response = self.client.post(self.endpoint, content=body, timeout=max(0.1, deadline - time.monotonic()))
            except httpx.HTTPError as exc:  # refused, reset, timed out: worth another try
                reason = type(exc).__name__
            else:
                if response.is_success:
                    if self._failing:
                        log.warning("traces: the collector takes spans again")
                    self._failing = False
                    return SpanExportResult.SUCCESS
                reason = f"HTTP {response.status_code}"
                wait = _retry_after(response, backoff) if response.status_code in RETRYABLE else None
            if wait is None or time.monotonic() + wait > deadline or self._closed.wait(wait):
                self._failed(len(spans), reason)
                return SpanExportResult.FAILURE
            backoff *= 2

    def _failed(self, count: int, reason: str) -> None:
        if not self._failing:  # once per outage, not once per batch
            log.warning("traces: %d spans not exported (%s); streams are unaffected", count, reason)
        self._failing = True

    def shutdown(self) -> None:
        self._closed.set()
        self.client.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is held here: the processor holds the spans


def _retry_after(response: httpx.Response, backoff: float) -> float:
    """The collector's Retry-After in seconds when it sends one (the specification asks clients to honour it)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return backoff


def exporter_for(config: TracingConfig) -> SpanExporter:
    """Where spans go: Application Insights, an OTLP/gRPC collector (the SDK's exporters), or chatsse's own."""
    if config.azure_monitor:
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

        monitor: SpanExporter = AzureMonitorTraceExporter(connection_string=config.azure_monitor)
        return monitor
    headers = config.headers or None
    if config.protocol == "grpc":
        from grpc import Compression
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        insecure = config.endpoint.startswith("http:")
        exporter: SpanExporter = GrpcExporter(
            endpoint=config.endpoint,
            headers=headers,
            insecure=insecure,
            timeout=config.timeout,
            compression=Compression.Gzip if config.compression else None,
        )
        return exporter
    return OtlpHttpExporter(config.endpoint, headers, config.timeout, config.compression, config.certificate)
