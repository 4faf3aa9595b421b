"""OTLP encoding of the SDK's spans: the same ExportTraceServiceRequest the SDK's `encode_spans` builds, on the
same opentelemetry-proto messages, at a quarter of its cost.

Why: the SDK's encoder builds each attribute as two messages from keyword arguments, about 100 us a span on the
machine bench/REPORT.md measures, which was most of what tracing cost a short reply. Filling the request in place
(`add()` and field assignment) costs about 25. `tests/test_otlp.py` checks that both encoders produce the same
message for any spans. chatsse's own exporter (`exporter.py`) sends it; the SDK's exporters keep their own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, SpanFlags
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

log = logging.getLogger(__name__)
KINDS = {
    SpanKind.INTERNAL: Span.SPAN_KIND_INTERNAL,
    SpanKind.SERVER: Span.SPAN_KIND_SERVER,
    SpanKind.CLIENT: Span.SPAN_KIND_CLIENT,
    SpanKind.PRODUCER: Span.SPAN_KIND_PRODUCER,
    SpanKind.CONSUMER: Span.SPAN_KIND_CONSUMER,
}
HAS_IS_REMOTE, IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def _value(target: AnyValue, value: Any) -> None:
    if value is None:
        target.SetInParent()
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, Sequence):
        target.array_value.SetInParent()  # an empty list is still a list
        values = target.array_value.values
        for item in value:
            _value(values.add(), item)
    elif isinstance(value, Mapping):
        target.kvlist_value.SetInParent()
        pairs = target.kvlist_value.values
        for key, item in value.items():
            pair = pairs.add()
            pair.key = str(key)
            _value(pair.value, item)
    else:
        raise TypeError(f"Invalid type {type(value)} of value {value}")


def _attributes(target: Any, attributes: Mapping[str, Any] | None) -> None:
    """`target` (a repeated KeyValue field) gets `attributes`; one that cannot be encoded is left out and logged."""
    for key, value in (attributes or {}).items():
        pair = target.add(key=key)
        try:
            _value(pair.value, value)
        except Exception as error:  # as the SDK does: one bad attribute does not lose the span
            log.exception("Failed to encode key %s: %s", key, error)
            del target[-1]


def _flags(context: SpanContext | None) -> Any:  # a SpanFlags value
    return HAS_IS_REMOTE | IS_REMOTE if context is not None and context.is_remote else HAS_IS_REMOTE


def _span(target: Span, span: ReadableSpan) -> None:
    context = span.get_span_context()
    assert context is not None
    target.trace_id = context.trace_id.to_bytes(16, "big")
    target.span_id = context.span_id.to_bytes(8, "big")
    if context.trace_state is not None:
        target.trace_state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
    parent = span.parent
    if parent:
        target.parent_span_id = parent.span_id.to_bytes(8, "big")
    target.name = span.name
    target.kind = KINDS[span.kind]
    if span.start_time is not None:
        target.start_time_unix_nano = span.start_time
    if span.end_time is not None:
        target.end_time_unix_nano = span.end_time
    _attributes(target.attributes, span.attributes)
    for event in span.events:
        added = target.events.add()
        added.name = event.name
        added.time_unix_nano = event.timestamp
        _attributes(added.attributes, event.attributes)
        added.dropped_attributes_count = event.dropped_attributes
    for link in span.links:
        linked = target.links.add()
        linked.trace_id = link.context.trace_id.to_bytes(16, "big")
        linked.span_id = link.context.span_id.to_bytes(8, "big")
        _attributes(linked.attributes, link.attributes)
        linked.dropped_attributes_count = link.dropped_attributes
        linked.flags = _flags(link.context)
    status = span.status
    target.status.SetInParent()
    target.status.code = status.status_code.value  # type: ignore[assignment]  # the same numbers as Status.Code
    if status.description is not None:
        target.status.message = status.description
    target.dropped_attributes_count = span.dropped_attributes
    target.dropped_events_count = span.dropped_events
    target.dropped_links_count = span.dropped_links
    target.flags = _flags(parent)


def encode_spans(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The OTLP request for `spans`, grouped by resource, then by instrumentation scope, in the order first seen."""
    request = ExportTraceServiceRequest()
    resources: dict[Resource, tuple[ResourceSpans, dict[InstrumentationScope | None, ScopeSpans]]] = {}
    last_resource, last_scope, into = None, None, None
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope or None
        if into is None or resource is not last_resource or scope is not last_scope:  # else: as the span before
            if resource not in resources:
                resources[resource] = (_resource_spans(request, resource), {})
            resource_spans, scopes = resources[resource]
            if scope not in scopes:
                scopes[scope] = _scope_spans(resource_spans, scope)
            last_resource, last_scope, into = resource, scope, scopes[scope]
        _span(into.spans.add(), span)
    return request


def _resource_spans(request: ExportTraceServiceRequest, resource: Resource) -> ResourceSpans:
    added: ResourceSpans = request.resource_spans.add()
    added.resource.SetInParent()
    _attributes(added.resource.attributes, resource.attributes)
    if resource.schema_url:
        added.schema_url = resource.schema_url
    return added


def _scope_spans(resource_spans: ResourceSpans, scope: InstrumentationScope | None) -> ScopeSpans:
    added: ScopeSpans = resource_spans.scope_spans.add()
    added.scope.SetInParent()
    if scope is not None:
        added.scope.name = scope.name
        if scope.version:
            added.scope.version = scope.version
        _attributes(added.scope.attributes, scope.attributes)
        if scope.schema_url:
            added.schema_url = scope.schema_url
    return added
