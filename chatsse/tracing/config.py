"""Whether tracing is on, and how: the standard OTEL_* settings from the environment and `.env`, checked up front
like every other setting (pure; nothing of OpenTelemetry is imported here).

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, unless
OTEL_SDK_DISABLED=true. The rest follows the OpenTelemetry specification's names and defaults.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

PROTOCOLS = ("http/protobuf", "grpc")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
BATCH = {  # OTEL_BSP_* and the SDK's argument each sets
    "OTEL_BSP_SCHEDULE_DELAY": "schedule_delay_millis",
    "OTEL_BSP_MAX_QUEUE_SIZE": "max_queue_size",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "max_export_batch_size",
    "OTEL_BSP_EXPORT_TIMEOUT": "export_timeout_millis",
}
CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
VALUE_LIMITS = ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")  # the first set wins
AZURE_MONITOR = "APPLICATIONINSIGHTS_CONNECTION_STRING"


@dataclass(frozen=True)
class TracingConfig:
    """Where spans go and which are kept."""

    endpoint: str  # the traces URL (http/protobuf), or the collector's address (grpc)
    protocol: str = "http/protobuf"
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may hold a collector's key
    service_name: str = "chatsse"
    resource: dict[str, str] = field(default_factory=dict)
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    batch: dict[str, int] = field(default_factory=dict)
    capture_content: bool = False  # prompt and reply text in spans: off, as the GenAI conventions ask
    value_length_limit: int | None = None  # the longest a string attribute may be (None: no limit, as specified)
    azure_monitor: str = field(default="", repr=False)  # an Application Insights connection string: export there
    timeout: float = 10.0  # seconds an export may take, its retries included
    compression: str = ""  # "gzip", or none
    certificate: str | None = None  # a CA file for an https collector the system does not trust


def _pairs(raw: str) -> dict[str, str]:
    """`key=value,key2=value2` (W3C Baggage style, percent-encoded), as OTEL_RESOURCE_ATTRIBUTES and headers are."""
    pairs = {}
    for item in raw.split(","):
        key, equals, value = item.partition("=")
        if equals and key.strip():
            pairs[unquote(key.strip())] = unquote(value.strip())
    return pairs


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def tracing_config(env: Mapping[str, str], problems: list[str]) -> TracingConfig | None:
    """The tracing configuration, or None when tracing is off; each problem is appended, naming the variable."""

    def get(name: str) -> str:
        return env.get(name, "").strip()

    if get("OTEL_SDK_DISABLED").lower() == "true":
        return None
    traces, general = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")
    azure_monitor = get(AZURE_MONITOR)
    if not traces and not general and not azure_monitor:
        return None
    if azure_monitor and not _installed("azure.monitor.opentelemetry.exporter"):
        problems.append(f"{AZURE_MONITOR} needs Azure Monitor's exporter: pip install 'chatsse[azure-monitor]'")
    if azure_monitor and "InstrumentationKey=" not in azure_monitor:
        problems.append(f"{AZURE_MONITOR} is not valid: expected InstrumentationKey=...;IngestionEndpoint=...")
    protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    name, raw = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces) if traces else ("OTEL_EXPORTER_OTLP_ENDPOINT", general)
    parts = urlsplit(raw)
    if (raw or not azure_monitor) and (parts.scheme not in ("http", "https") or not parts.hostname):
        problems.append(f"{name}={raw!r} is not valid: expected a URL such as http://localhost:4318")
    if protocol not in PROTOCOLS:
        problems.append(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not valid: expected http/protobuf or grpc")
    elif protocol == "grpc":
        if not _installed("opentelemetry.exporter.otlp.proto.grpc"):
            problems.append("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs its exporter: pip install 'chatsse[otlp-grpc]'")
    # The general endpoint is a base: traces go to its /v1/traces (the specification's rule for http/protobuf).
    endpoint = raw if traces or protocol == "grpc" or not raw else raw.rstrip("/") + "/v1/traces"
    sampler = get("OTEL_TRACES_SAMPLER").lower() or "parentbased_always_on"
    if sampler not in SAMPLERS:
        problems.append(f"OTEL_TRACES_SAMPLER={sampler!r} is not valid: expected one of {', '.join(SAMPLERS)}")
    sampler_arg = 1.0
    if get("OTEL_TRACES_SAMPLER_ARG"):
        try:
            sampler_arg = float(get("OTEL_TRACES_SAMPLER_ARG"))
            if not 0 <= sampler_arg <= 1:
                raise ValueError
        except ValueError:
            problems.append(f"OTEL_TRACES_SAMPLER_ARG={get('OTEL_TRACES_SAMPLER_ARG')!r} is not valid: a number 0 to 1")

    def whole(variable: str) -> int | None:
        """The variable's whole number > 0, or None (unset, or a problem appended)."""
        if get(variable).isdigit() and int(get(variable)) > 0:
            return int(get(variable))
        if get(variable):
            problems.append(f"{variable}={get(variable)!r} is not valid: expected a whole number > 0")
        return None

    batch = {argument: n for variable, argument in BATCH.items() if (n := whole(variable)) is not None}

    def exporter(traces_only: str, general: str) -> tuple[str, str]:
        """An exporter setting: the traces-only variable wins over the general one (variable, value)."""
        return (traces_only, get(traces_only)) if get(traces_only) else (general, get(general))

    timeout_name, timeout_ms = exporter("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    if timeout_ms and not (timeout_ms.isdigit() and int(timeout_ms) > 0):
        problems.append(f"{timeout_name}={timeout_ms!r} is not valid: expected a whole number of milliseconds > 0")
    compression_name, compression = exporter("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
    if compression.lower() not in ("", "gzip", "none"):
        problems.append(f"{compression_name}={compression!r} is not valid: expected gzip or none")
    certificate_name, certificate = exporter("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")
    if certificate and not os.path.isfile(certificate):
        problems.append(f"{certificate_name}={certificate!r} is not valid: expected the path of a PEM file")
    value_length_limit = next((whole(variable) for variable in VALUE_LIMITS if get(variable)), None)
    resource = _pairs(get("OTEL_RESOURCE_ATTRIBUTES"))
    return TracingConfig(
        endpoint=endpoint,
        protocol=protocol,
        headers=_pairs(get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or get("OTEL_EXPORTER_OTLP_HEADERS")),
        service_name=get("OTEL_SERVICE_NAME") or resource.get("service.name") or "chatsse",
        resource=resource,
        sampler=sampler,
        sampler_arg=sampler_arg,
        batch=batch,
        capture_content=get(CAPTURE).lower() == "true",
        value_length_limit=value_length_limit,
        azure_monitor=azure_monitor,
        timeout=int(timeout_ms) / 1000 if timeout_ms.isdigit() and int(timeout_ms) > 0 else 10.0,
        compression="gzip" if compression.lower() == "gzip" else "",
        certificate=certificate or None,
    )
