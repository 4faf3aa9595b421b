"""chatsse's OTLP encoder against the SDK's: the same bytes for any spans (the SDK's `encode_spans` is the oracle),
and the SDK's exporters use it once tracing is on."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from chatsse.tracing import TracingConfig
from chatsse.tracing.otlp import encode_spans
from tests.otlp_receiver import otlp_receiver

UNENCODABLE: Any = object()  # neither encoder can encode it: both leave the attribute out and log
text = st.text(max_size=12)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    text,
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.binary(max_size=8),
)
value = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=6,
)
attributes = st.dictionaries(text, value, max_size=5)
ids = st.integers(1, 2**64 - 1)
states = st.one_of(
    st.none(),
    st.just(TraceState()),
    st.just(TraceState([("vendor", "abc"), ("other", "x-1")])),
)


@st.composite
def contexts(draw: Any) -> SpanContext:
    return SpanContext(
        draw(st.integers(1, 2**128 - 1)),
        draw(ids),
        is_remote=draw(st.booleans()),
        trace_flags=TraceFlags(draw(st.sampled_from([0, 1, 3]))),
        trace_state=draw(states),
    )


RESOURCES = [
    Resource({"service.name": "chatsse", "service.version": "0.1.0"}),
    Resource({"service.name": "other", "n": 3}, schema_url="https://opentelemetry.io/schemas/1.21.0"),
]
SCOPES = [
    None,
    InstrumentationScope("chatsse", "0.1.0"),
    InstrumentationScope("lib", None, "https://opentelemetry.io/schemas/1.21.0", {"a": 1}),
]


@st.composite
def spans(draw: Any) -> ReadableSpan:
    events = draw(st.lists(st.builds(Event, text, st.one_of(st.none(), attributes), st.integers(0, 2**63)), max_size=2))
    links = draw(st.lists(st.builds(Link, contexts(), st.one_of(st.none(), attributes)), max_size=2))
    status = draw(
        st.one_of(
            st.just(Status()),
            st.builds(Status, st.just(StatusCode.ERROR), st.one_of(st.none(), text)),
            st.just(Status(StatusCode.OK)),
        )
    )
    start = draw(st.one_of(st.none(), st.integers(0, 2**63)))
    return ReadableSpan(
        name=draw(text),
        context=draw(contexts()),
        parent=draw(st.one_of(st.none(), contexts())),
        resource=draw(st.sampled_from(RESOURCES)),
        attributes=draw(attributes),
        events=events,
        links=links,
        kind=draw(st.sampled_from(list(SpanKind))),
        status=status,
        start_time=start,
        end_time=draw(st.one_of(st.none(), st.integers(0, 2**63))),
        instrumentation_scope=draw(st.sampled_from(SCOPES)),
    )


# Another test's exporter thread may still be retrying (with random jitter) against a collector that is down, which
# hypothesis would take for a strategy using `random`.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans(), max_size=6))
def test_the_encoding_is_the_sdks(batch: list[ReadableSpan]) -> None:
    assert encode_spans(batch).SerializeToString() == sdk_encode_spans(batch).SerializeToString()


def test_an_attribute_neither_can_encode_is_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    context = SpanContext(1, 2, is_remote=False)
    span = ReadableSpan("s", context, attributes={"ok": "yes", "bad": UNENCODABLE, "also": [1, UNENCODABLE]})
    with caplog.at_level(logging.ERROR):
        ours = encode_spans([span]).SerializeToString()
    assert ours == sdk_encode_spans([span]).SerializeToString()
    assert [kv.key for kv in encode_spans([span]).resource_spans[0].scope_spans[0].spans[0].attributes] == ["ok"]
    assert "Failed to encode key bad" in caplog.text and "Failed to encode key also" in caplog.text


def test_tracing_exports_with_its_own_exporter_and_leaves_the_sdks_alone() -> None:
    from opentelemetry.exporter.otlp.proto.common import trace_encoder

    from chatsse.tracing.exporter import OtlpHttpExporter
    from chatsse.tracing.otel import OtelTracing

    tracing = OtelTracing(TracingConfig(endpoint="http://127.0.0.1:9/v1/traces"))
    try:
        assert isinstance(tracing.exporter, OtlpHttpExporter)
        assert trace_encoder.encode_spans is sdk_encode_spans  # nothing of the SDK's replaced
        assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" not in sys.modules
    finally:
        tracing.processor.shutdown()  # type: ignore[no-untyped-call]


def test_the_exporter_retries_what_the_specification_calls_retryable_and_sends_the_headers_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from chatsse.tracing.exporter import OtlpHttpExporter

    span = ReadableSpan("retried", SpanContext(1, 2, is_remote=False))
    with otlp_receiver() as receiver:
        receiver.refusals = [503, 429]
        exporter = OtlpHttpExporter(receiver.url, {"api-key": "collector-key"}, timeout=5, compression="gzip")
        try:
            assert exporter.export([span]) is SpanExportResult.SUCCESS
            assert receiver.requests == 3 and [s.name for s in receiver.spans] == ["retried"]
            sent = receiver.headers[-1]
            assert sent["api-key"] == "collector-key" and sent["content-encoding"] == "gzip"
            assert sent["content-type"] == "application/x-protobuf"

            receiver.refusals = [400, 400]  # not retryable: one try per batch, one log line for the outage
            with caplog.at_level(logging.WARNING, logger="chatsse"):
                results = [exporter.export([span]), exporter.export([span])]
                assert exporter.export([span]) is SpanExportResult.SUCCESS  # the collector is back
        finally:
            exporter.shutdown()
    assert results == [SpanExportResult.FAILURE] * 2 and receiver.requests == 6
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "traces: 1 spans not exported (HTTP 400); streams are unaffected",
        "traces: the collector takes spans again",
    ]
    assert "collector-key" not in caplog.text


def test_the_exporter_gives_up_within_its_timeout_and_at_shutdown() -> None:
    import threading
    import time

    from chatsse.tracing.exporter import OtlpHttpExporter

    exporter = OtlpHttpExporter("http://127.0.0.1:9/v1/traces", timeout=30)  # nothing listens: refused, retried
    span = ReadableSpan("lost", SpanContext(1, 2, is_remote=False))
    results: list[SpanExportResult] = []
    worker = threading.Thread(target=lambda: results.append(exporter.export([span])))
    began = time.monotonic()
    worker.start()
    time.sleep(0.3)  # in its first backoff
    exporter.shutdown()
    worker.join(10)
    assert results == [SpanExportResult.FAILURE] and time.monotonic() - began < 5  # not the 30 s timeout
