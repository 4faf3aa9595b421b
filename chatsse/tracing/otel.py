"""The tracing hooks on the OpenTelemetry SDK and its OTLP exporter: a SERVER span per HTTP request (its whole stream
included), a CLIENT span per upstream attempt under the GenAI semantic conventions, and W3C trace context from the
caller to Azure. Imported only when tracing is on.

The spans are the SDK's own `ReadableSpan`s, sampled by its samplers, batched by its BatchSpanProcessor and sent by
its exporters. What is not the SDK's is the tracer: the SDK's `Span` checks every attribute's type on each set and
takes a lock per call, about 150 us a request here, while the gateway's two spans carry only attributes it makes
itself, of known types, from one task. So a span here is its fields until it ends, then one ReadableSpan handed to
the processor. Everything is the app's own, not process-wide: several apps with their own settings can live in one
process (as in tests), and nothing else in the process is traced.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from chatsse import __version__
from chatsse.events import Content
from chatsse.events import Event as ReplyEvent
from chatsse.record import RequestRecord
from chatsse.schema import ChatRequest
from chatsse.tracing.base import (
    NO_ATTEMPT,
    AttemptSpan,
    Outcome,
    ServerSpan,
    Target,
    Tracing,
    current_server,
    provider_name,
)
from chatsse.tracing.config import TracingConfig
from chatsse.tracing.exporter import exporter_for

PROPAGATOR = TraceContextTextMapPropagator()
CONTEXT_HEADERS = (b"traceparent", b"tracestate")
SHUTDOWN_SECONDS = 5.0  # at the end of the process: what the queue may still take to send
UNSET, ERROR = Status(StatusCode.UNSET), Status(StatusCode.ERROR)
RECORD_AND_SAMPLE = sampling.Decision.RECORD_AND_SAMPLE


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


class OtelTracing(Tracing):
    enabled = True

    def __init__(self, config: TracingConfig) -> None:
        names = {"service.name": config.service_name, "service.version": __version__}
        self.resource = Resource.create({**config.resource, **names})
        self.scope = InstrumentationScope("chatsse", __version__)
        self.sampler = _sampler(config)
        self.ids = RandomIdGenerator()
        batch = config.batch
        self.exporter = exporter_for(config)
        self.processor = BatchSpanProcessor(
            self.exporter,
            max_queue_size=batch.get("max_queue_size"),
            schedule_delay_millis=batch.get("schedule_delay_millis"),
            max_export_batch_size=batch.get("max_export_batch_size"),
            export_timeout_millis=batch.get("export_timeout_millis"),
        )
        self.capture = config.capture_content
        self.value_length_limit = config.value_length_limit

    def server(self, scope: Mapping[str, Any], record: RequestRecord) -> ServerSpan:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in CONTEXT_HEADERS}
        context = PROPAGATOR.extract(carrier) if carrier else None  # the caller's trace goes on
        parent: SpanContext | None = trace.get_current_span(context).get_span_context() if carrier else None
        if parent is not None and not parent.is_valid:
            parent = None
        trace_id = parent.trace_id if parent else self.ids.generate_trace_id()
        method = scope["method"]
        name = f"{method} {record.route}"
        attributes = {"http.request.method": method, "url.path": scope["path"], "url.scheme": scope["scheme"]}
        # The sampler decides once, here: for each sampler the settings offer, an attempt span (a local child, the
        # same trace id) gets the decision its request got, so it inherits it.
        sampled = self.sampler.should_sample(context, trace_id, name, SpanKind.SERVER, attributes)
        flags = TraceFlags.SAMPLED if sampled.decision is RECORD_AND_SAMPLE else TraceFlags.DEFAULT
        random_id = parent.trace_flags.random_trace_id if parent else self.ids.is_trace_id_random()
        if random_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        ids = SpanContext(trace_id, self.ids.generate_span_id(), False, TraceFlags(flags), sampled.trace_state)
        record.trace_id, record.span_id = f"{trace_id:032x}", f"{ids.span_id:016x}"  # logs join traces
        if sampled.attributes:
            attributes.update(sampled.attributes)
        return _Server(self, _Span(name, SpanKind.SERVER, ids, parent, attributes))

    def attempt(self, target: Target, request: ChatRequest, number: int) -> AttemptSpan:
        parent = current_server.get().context  # the request's SERVER span: its trace and sampling decision
        return _Attempt(self, parent, target, request, number) if parent is not None else NO_ATTEMPT

    def end(self, span: _Span, status: Status) -> None:
        """`span` is over: to the exporter, if its trace is sampled."""
        if span.context.trace_flags.sampled:
            attributes, limit = span.attributes, self.value_length_limit
            if limit is not None:  # as the SDK's span limits would: strings cut at the limit
                attributes = {k: v[:limit] if isinstance(v, str) else v for k, v in attributes.items()}
            self.processor.on_end(
                ReadableSpan(
                    name=span.name,
                    context=span.context,
                    parent=span.parent,
                    resource=self.resource,
                    attributes=attributes,
                    events=span.events,
                    links=span.links,
                    kind=span.kind,
                    status=status,
                    start_time=span.start_time,
                    end_time=time.time_ns(),
                    instrumentation_scope=self.scope,
                )
            )

    async def shutdown(self) -> None:
        # The batch processor sends what it holds; a collector that is down must not hold up the process's exit,
        # so its shutdown runs in a daemon thread, waited for within a bound.
        ending = threading.Thread(target=self.processor.shutdown, name="chatsse-tracing-shutdown", daemon=True)
        ending.start()
        await anyio.to_thread.run_sync(ending.join, SHUTDOWN_SECONDS)


class _Span:
    """What a span holds until it ends."""

    def __init__(
        self, name: str, kind: SpanKind, context: SpanContext, parent: SpanContext | None, attributes: dict[str, Any]
    ) -> None:
        self.name, self.kind, self.context, self.parent, self.attributes = name, kind, context, parent, attributes
        self.start_time = time.time_ns()
        self.events: list[Event] = []
        self.links: list[trace.Link] = []


class _Server(ServerSpan):
    def __init__(self, tracing: OtelTracing, span: _Span) -> None:
        self.tracing, self.span = tracing, span
        self.context = context = span.context  # its attempts' parent
        self.origin = f"{context.trace_id:032x}-{context.span_id:016x}"
        self.reset = current_server.set(self)

    def follows(self, origin: str | None) -> None:
        if origin:
            trace_id, _, span_id = origin.partition("-")
            flags = TraceFlags(TraceFlags.SAMPLED)
            linked = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=flags)
            self.span.links.append(trace.Link(linked))

    def finish(self, record: RequestRecord) -> None:
        attributes = self.span.attributes
        attributes["http.route"], attributes["http.response.status_code"] = record.route, record.status
        if record.caller != "-":
            attributes["chatsse.caller"] = record.caller  # its name, or a key's harmless id: never the key
        if record.cost_micros is not None:
            attributes["chatsse.cost_micros"], attributes["chatsse.currency"] = record.cost_micros, record.currency
        if record.guards:  # what acted, as on the log line: "<guard>:<action>:<side>", never the text it matched
            attributes["chatsse.guards"] = list(record.guards)
        error = record.error_code or record.exception
        if error:
            attributes["error.type"] = error
        failed = record.status >= 500 or record.exception or (error and record.status < 400)  # a 4xx is the client's
        self.tracing.end(self.span, ERROR if failed else UNSET)
        current_server.reset(self.reset)


class _Attempt(AttemptSpan):
    enabled = True

    def __init__(
        self, tracing: OtelTracing, parent: SpanContext, upstream: Target, request: ChatRequest, number: int
    ) -> None:
        host, port = _address(upstream.endpoint)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider_name(upstream.api),
            "gen_ai.request.model": upstream.deployment,
            "server.address": host,
            "server.port": port,
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
        self.capture = tracing.capture
        if self.capture:  # the conventions' opt-in: prompt and reply text in the span
            attributes["gen_ai.input.messages"] = orjson.dumps(request.messages).decode()
            self.texts: list[str] = []
        ids = SpanContext(
            parent.trace_id, tracing.ids.generate_span_id(), False, parent.trace_flags, parent.trace_state
        )
        self.tracing = tracing
        self.span = _Span(f"chat {upstream.deployment}", SpanKind.CLIENT, ids, parent, attributes)
        self.started = time.monotonic()
        self.first_at: float | None = None
        self.ended = False

    @property
    def headers(self) -> dict[str, str]:
        ids = self.span.context  # W3C trace context, written as the propagator would
        headers = {"traceparent": f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"}
        if ids.trace_state:
            headers["tracestate"] = ids.trace_state.to_header()
        return headers

    def first_token(self) -> None:
        if self.ended:  # the span went to the exporter: it is no longer ours to change
            return
        self.first_at = time.monotonic()
        self.span.events.append(Event("gen_ai.first_token", timestamp=time.time_ns()))
        self.span.attributes["gen_ai.response.time_to_first_chunk"] = self.first_at - self.started

    def output(self, events: Sequence[ReplyEvent]) -> None:
        self.texts += [event.text for event in events if isinstance(event, Content)]

    def failed(self, code: str) -> None:
        self.span.attributes["error.type"] = code
        self._end(Status(StatusCode.ERROR, code))

    def finished(self, outcome: Outcome) -> None:
        if self.ended:  # a reply's end is reached by more than one path
            return
        attributes = self.span.attributes
        if outcome.response_model:
            attributes["gen_ai.response.model"] = outcome.response_model
        if outcome.response_id:
            attributes["gen_ai.response.id"] = outcome.response_id
        if outcome.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = (outcome.finish_reason,)
        usage = outcome.usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"] = prompt, completion
            generating = time.monotonic() - (self.first_at or self.started)
            if generating > 0:
                attributes["chatsse.output_tokens_per_second"] = completion / generating
        if self.capture:
            parts = [{"type": "text", "content": "".join(self.texts)}]
            message = {"role": "assistant", "parts": parts, "finish_reason": outcome.finish_reason or ""}
            attributes["gen_ai.output.messages"] = orjson.dumps([message]).decode()
        failure = outcome.failure_code
        if failure is not None:
            attributes["error.type"] = failure
        self._end(Status(StatusCode.ERROR, failure) if failure is not None else UNSET)

    def _end(self, status: Status) -> None:
        if not self.ended:
            self.ended = True
            self.tracing.end(self.span, status)


@functools.lru_cache(maxsize=64)
def _address(endpoint: str) -> tuple[str, int]:
    """`server.address` and `server.port` of an upstream's endpoint."""
    where = urlsplit(endpoint)
    return where.hostname or "", where.port or (443 if where.scheme == "https" else 80)
