"""The tracing hooks on the OpenTelemetry SDK and its OTLP exporter: a SERVER span per HTTP request (its whole stream
included), a CLIENT span per upstream attempt under the GenAI semantic conventions, and W3C trace context from the
caller to Azure. Imported only when tracing is on. The provider is the app's own, not the process-wide one: several
apps with their own settings can live in one process (as in tests), and nothing else in the process is traced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from chatsse import __version__
from chatsse.chunks import ChunkTranslator
from chatsse.events import Content, Event
from chatsse.record import RequestRecord
from chatsse.schema import ChatRequest
from chatsse.tracing.base import AttemptSpan, ServerSpan, Tracing, current_server, provider_name
from chatsse.tracing.config import TracingConfig
from chatsse.upstreams.config import UpstreamConfig

PROPAGATOR = TraceContextTextMapPropagator()
CONTEXT_HEADERS = (b"traceparent", b"tracestate")
SHUTDOWN_SECONDS = 5.0  # at the end of the process: what the queue may still take to send


def _sampler(config: TracingConfig) -> sampling.Sampler:
    ratio = sampling.TraceIdRatioBased(config.sampler_arg)
    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(ratio),
    }[config.sampler]


def _exporter(config: TracingConfig) -> SpanExporter:
    if config.azure_monitor:
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

        monitor: SpanExporter = AzureMonitorTraceExporter(connection_string=config.azure_monitor)
        return monitor
    headers = config.headers or None
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        insecure = config.endpoint.startswith("http:")
        exporter: SpanExporter = GrpcExporter(endpoint=config.endpoint, headers=headers, insecure=insecure)
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=config.endpoint, headers=headers)


class OtelTracing(Tracing):
    enabled = True

    def __init__(self, config: TracingConfig) -> None:
        names = {"service.name": config.service_name, "service.version": __version__}
        resource = Resource.create({**config.resource, **names})
        self.provider = TracerProvider(resource=resource, sampler=_sampler(config))
        batch = config.batch
        self.provider.add_span_processor(
            BatchSpanProcessor(
                _exporter(config),
                max_queue_size=batch.get("max_queue_size"),
                schedule_delay_millis=batch.get("schedule_delay_millis"),
                max_export_batch_size=batch.get("max_export_batch_size"),
                export_timeout_millis=batch.get("export_timeout_millis"),
            )
        )
        self.tracer = self.provider.get_tracer("chatsse", __version__)
        self.capture = config.capture_content

    def server(self, scope: Mapping[str, Any], record: RequestRecord) -> ServerSpan:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in CONTEXT_HEADERS}
        method = scope["method"]
        span = self.tracer.start_span(
            f"{method} {record.route}",
            context=PROPAGATOR.extract(carrier) if carrier else None,  # the caller's trace goes on
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"], "url.scheme": scope["scheme"]},
        )
        ids = span.get_span_context()
        record.trace_id, record.span_id = f"{ids.trace_id:032x}", f"{ids.span_id:016x}"  # logs join traces
        return _Server(span)

    def attempt(self, upstream: UpstreamConfig, request: ChatRequest, number: int) -> AttemptSpan:
        return _Attempt(self.tracer, upstream, request, number, self.capture)

    async def shutdown(self) -> None:
        # The batch processor sends what it holds; a collector that is down must not hold up the process's exit,
        # so its shutdown runs in a daemon thread, waited for within a bound.
        ending = threading.Thread(target=self.provider.shutdown, name="chatsse-tracing-shutdown", daemon=True)
        ending.start()
        await anyio.to_thread.run_sync(ending.join, SHUTDOWN_SECONDS)


class _Server(ServerSpan):
    def __init__(self, span: trace.Span) -> None:
        # Attempts find their parent here, not in OpenTelemetry's global context: no attach and detach per request.
        self.span, self.context = span, trace.set_span_in_context(span)
        ids = span.get_span_context()
        self.origin = f"{ids.trace_id:032x}-{ids.span_id:016x}"
        self.reset = current_server.set(self)

    def follows(self, origin: str | None) -> None:
        if origin:
            trace_id, _, span_id = origin.partition("-")
            flags = TraceFlags(TraceFlags.SAMPLED)
            self.span.add_link(SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=flags))

    def finish(self, record: RequestRecord) -> None:
        span = self.span
        attributes: dict[str, Any] = {"http.route": record.route, "http.response.status_code": record.status}
        if record.caller != "-":
            attributes["chatsse.caller"] = record.caller  # its name, or a key's harmless id: never the key
        error = record.error_code or record.exception
        if error:
            attributes["error.type"] = error
        span.set_attributes(attributes)
        if record.status >= 500 or record.exception or (error and record.status < 400):  # a 4xx is the client's
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        current_server.reset(self.reset)


class _Attempt(AttemptSpan):
    enabled = True

    def __init__(
        self, tracer: trace.Tracer, upstream: UpstreamConfig, request: ChatRequest, number: int, capture: bool
    ) -> None:
        where = urlsplit(upstream.endpoint)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider_name(upstream.api),
            "gen_ai.request.model": upstream.deployment,
            "server.address": where.hostname or "",
            "server.port": where.port or (443 if where.scheme == "https" else 80),
            "chatsse.upstream": upstream.name,
            "chatsse.attempt": number,
        }
        params = request.params
        for name in ("temperature", "top_p"):
            if name in params:
                attributes[f"gen_ai.request.{name}"] = params[name]
        caps = [n for n in (params.get("max_tokens"), upstream.max_tokens) if n is not None]
        if caps:
            attributes["gen_ai.request.max_tokens"] = min(caps)
        self.capture = capture
        if capture:  # the conventions' opt-in: prompt and reply text in the span
            attributes["gen_ai.input.messages"] = orjson.dumps(request.messages).decode()
            self.texts: list[str] = []
        parent = current_server.get().context  # the request's SERVER span
        self.span = tracer.start_span(
            f"chat {upstream.deployment}", context=parent, kind=SpanKind.CLIENT, attributes=attributes
        )
        self.started = time.monotonic()
        self.first_at: float | None = None
        self.ended = False

    @property
    def headers(self) -> dict[str, str]:
        ids = self.span.get_span_context()  # W3C trace context, written as the propagator would
        headers = {"traceparent": f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"}
        if ids.trace_state:
            headers["tracestate"] = ids.trace_state.to_header()
        return headers

    def first_token(self) -> None:
        self.first_at = time.monotonic()
        self.span.add_event("gen_ai.first_token")
        self.span.set_attribute("gen_ai.response.time_to_first_chunk", self.first_at - self.started)

    def output(self, events: Sequence[Event]) -> None:
        self.texts += [event.text for event in events if isinstance(event, Content)]

    def failed(self, code: str) -> None:
        self.span.set_attribute("error.type", code)
        self._end(Status(StatusCode.ERROR, code))

    def finished(self, translator: ChunkTranslator) -> None:
        if self.ended:  # a reply's end is reached by more than one path
            return
        attributes: dict[str, Any] = {}  # set at once: each set_attribute takes the span's lock
        if translator.response_model:
            attributes["gen_ai.response.model"] = translator.response_model
        if translator.response_id:
            attributes["gen_ai.response.id"] = translator.response_id
        if translator.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [translator.finish_reason]
        usage = translator.usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"] = prompt, completion
            generating = time.monotonic() - (self.first_at or self.started)
            if generating > 0:
                attributes["chatsse.output_tokens_per_second"] = completion / generating
        if self.capture:
            parts = [{"type": "text", "content": "".join(self.texts)}]
            message = {"role": "assistant", "parts": parts, "finish_reason": translator.finish_reason or ""}
            attributes["gen_ai.output.messages"] = orjson.dumps([message]).decode()
        failure = translator.failure
        if failure is not None:
            attributes["error.type"] = failure.code
        self.span.set_attributes(attributes)
        self._end(Status(StatusCode.ERROR, failure.code) if failure is not None else None)

    def _end(self, status: Status | None) -> None:
        if self.ended:
            return
        self.ended = True
        if status is not None:
            self.span.set_status(status)
        self.span.end()
