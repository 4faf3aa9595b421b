"""The tracing hooks the gateway calls, as they run when tracing is off: no-ops, with nothing of OpenTelemetry loaded.
`otel.py` implements the same hooks on the OpenTelemetry SDK.

    Tracing.server(scope)              the SERVER span of one HTTP request; ServerSpan.finish at its end
    ServerSpan.follows(origin)         a resumed reply's request: linked to the request that started the reply
    Tracing.attempt(target, chat)      the CLIENT span of one upstream attempt, and the headers that carry it
    AttemptSpan.failed / .finished     its end: an error, or the reply's Outcome (model, id, finish reason, usage)

Tracing imports nothing of the upstreams: the failover hands it a `Target`, and a reply's end an `Outcome`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatsse.record import RequestRecord

if TYPE_CHECKING:
    from chatsse.events import Event
    from chatsse.schema import ChatRequest


@dataclass(frozen=True)
class Target:
    """The upstream of an attempt, as its span names it."""

    name: str
    endpoint: str
    deployment: str
    api: str  # azure, azure-v1 or openai
    max_tokens: int | None = None  # the upstream's own cap


@dataclass(frozen=True)
class Outcome:
    """How a reply ended, as its attempt's span records it."""

    response_model: str | None = None
    response_id: str | None = None
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None
    failure_code: str | None = None  # the error that ended it, if one did


def provider_name(api: str) -> str:
    """`gen_ai.provider.name` of an upstream's API, as the GenAI conventions name providers."""
    return "openai" if api == "openai" else "azure.ai.openai"


class ServerSpan:
    """The span of one HTTP request (none, here)."""

    origin: str | None = None  # "<trace id>-<span id>": what a kept reply records, for its followers' links
    context: Any = None  # the span's ids (an OpenTelemetry SpanContext): its attempts' parent and sampling decision

    def follows(self, origin: str | None) -> None:
        """This request follows a kept reply that request `origin` started."""

    def finish(self, record: RequestRecord) -> None:
        """The request is over (its stream too): its route, status, caller and error."""


class AttemptSpan:
    """The span of one attempt on an upstream (none, here)."""

    enabled = False
    capture = False  # the reply's text is wanted (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)

    @property
    def headers(self) -> dict[str, str]:
        """What the upstream request carries for the trace to continue there (W3C traceparent)."""
        return {}

    def first_token(self) -> None:
        """The reply's first token arrived."""

    def output(self, events: Sequence[Event]) -> None:
        """More of the reply (asked only when `capture`)."""

    def failed(self, code: str) -> None:
        """The attempt failed before the first token, with this error code (the failover tries the next, in a
        sibling span)."""

    def finished(self, outcome: Outcome) -> None:
        """The reply ended, however it ended."""


NO_SERVER, NO_ATTEMPT = ServerSpan(), AttemptSpan()
current_server: ContextVar[ServerSpan] = ContextVar("chatsse_server_span", default=NO_SERVER)


class Tracing:
    """The hooks, doing nothing: tracing is off."""

    enabled = False

    def server(self, scope: Mapping[str, Any], record: RequestRecord) -> ServerSpan:
        return NO_SERVER

    def attempt(self, target: Target, request: ChatRequest, number: int) -> AttemptSpan:
        return NO_ATTEMPT

    async def shutdown(self) -> None:
        """Send what is still queued (the end of the process)."""


NO_TRACING = Tracing()
