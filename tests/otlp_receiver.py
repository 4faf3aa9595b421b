"""A real OTLP/HTTP trace receiver for tests: it takes what the real exporter POSTs to /v1/traces, decodes it with
opentelemetry-proto, and keeps each span as a plain dict."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


@dataclass
class Span:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[str]
    links: list[tuple[str, str]]  # (trace id, span id)
    status: str
    resource: dict[str, Any]
    start_ns: int
    end_ns: int


@dataclass
class Receiver:
    url: str  # the traces endpoint (…/v1/traces)
    base: str  # what OTEL_EXPORTER_OTLP_ENDPOINT takes
    spans: list[Span] = field(default_factory=list)
    requests: int = 0
    content_types: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # each request's, lower-cased names
    refusals: list[int] = field(default_factory=list)  # statuses to answer the next requests with, in turn

    def wait_for(self, count: int, timeout: float = 10.0, **match: Any) -> list[Span]:
        """At least `count` spans whose fields equal `match` (a safety-net wait: the exporter sends in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [s for s in list(self.spans) if all(getattr(s, k) == v for k, v in match.items())]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.01)


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    receiver = Receiver("", "")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            receiver.requests += 1
            receiver.content_types.append(self.headers.get("content-type", ""))
            receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
            if receiver.refusals:
                self.send_response(receiver.refusals.pop(0))
                self.send_header("retry-after", "0")  # honoured: the retry comes at once
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            for resource_spans in export.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        receiver.spans.append(
                            Span(
                                name=span.name,
                                kind=KINDS.get(span.kind, str(span.kind)),
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                attributes={kv.key: _value(kv.value) for kv in span.attributes},
                                events=[event.name for event in span.events],
                                links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                                status=STATUS.get(span.status.code, str(span.status.code)),
                                resource=resource,
                                start_ns=span.start_time_unix_nano,
                                end_ns=span.end_time_unix_nano,
                            )
                        )
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    receiver.base = f"http://127.0.0.1:{port}"
    receiver.url = receiver.base + "/v1/traces"
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
