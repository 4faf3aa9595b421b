"""What one request did: the record every layer fills in, and the context variable that carries it."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    """What one request did; filled in by the layers it passes through, logged once at its end."""

    request_id: str
    method: str
    route: str
    started: float = field(default_factory=time.perf_counter)
    status: int = 0
    caller: str = "-"
    upstream: str | None = None  # the name of the upstream that served the reply
    attempts: list[str] = field(default_factory=list)  # "<upstream>:<ok or error code>", in order
    upstream_status: int | None = None
    retries: int = 0
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    content_chunks: int = 0
    finish_reason: str | None = None
    prompt_tokens: int | None = None  # the reply's tokens, as charged to the caller
    completion_tokens: int | None = None
    tokens_estimated: bool = False  # the upstream sent no usage: counted from the text
    cost_micros: int | None = None  # what the reply cost, in micro-units of `currency` (its model has a [[price]])
    currency: str | None = None
    error_code: str | None = None
    guards: list[str] | None = None  # "<guard>:<action>:<input|output>" for each time a guard acted
    client_disconnected: bool = False
    exception: str | None = None  # the type of an unexpected exception (a bug), never its text
    trace_id: str | None = None  # with tracing on: the request's trace and SERVER span, so logs join traces
    span_id: str | None = None
    completed: bool = False

    def first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = round((time.perf_counter() - self.started) * 1000, 2)


current_record: ContextVar[RequestRecord | None] = ContextVar("chatsse_request", default=None)
