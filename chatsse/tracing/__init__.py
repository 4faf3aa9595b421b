"""Traces: one per request, under the OpenTelemetry GenAI conventions, carried from the caller to Azure, when the
standard OTEL_* settings ask for them.

config.py   whether tracing is on and how: OTEL_* from the environment and .env, checked (pure)
base.py     Tracing: the hooks the gateway calls, as no-ops (tracing off: nothing of OpenTelemetry is loaded)
otel.py     the same hooks on the OpenTelemetry SDK and its OTLP exporter (imported only when tracing is on)
otlp.py     the OTLP encoding of spans: the SDK's output at a quarter of its cost
exporter.py chatsse's own OTLP/HTTP exporter: that encoding, sent with httpx and retried (the SDK's left alone)
"""

from chatsse.tracing.base import (
    NO_ATTEMPT,
    NO_TRACING,
    AttemptSpan,
    Outcome,
    ServerSpan,
    Target,
    Tracing,
    current_server,
    provider_name,
)
from chatsse.tracing.config import TracingConfig

__all__ = [
    "NO_ATTEMPT",
    "NO_TRACING",
    "AttemptSpan",
    "Outcome",
    "ServerSpan",
    "Target",
    "Tracing",
    "TracingConfig",
    "current_server",
    "provider_name",
]
