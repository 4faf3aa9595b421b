"""Seeing what happens: request ids and one structured log line per request (and the request's metrics, through
metrics.py)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsse.record import RequestRecord, current_record
from chatsse.server.metrics import Metrics
from chatsse.tracing import NO_TRACING, Tracing

log = logging.getLogger("chatsse.access")
bug_log = logging.getLogger("chatsse.bug")
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
ROUTES = (
    "/api/v1/chat/stream",
    "/api/v1/chat/ui",
    "/api/v1/models",
    "/api/v1/usage",
    "/v1/chat/completions",
    "/v1/models",
    "/v1/responses",
    "/health",
    "/metrics",
    "/",
)
# The routes with a path parameter, by their fixed start: their template is the label (a bounded set of values).
TEMPLATES = (
    ("/api/v1/chat/stream/", "/api/v1/chat/stream/{stream_id}"),
    ("/api/v1/chat/ui/", "/api/v1/chat/ui/{chat_id}/stream"),
)


def route_of(path: str) -> str:
    """The route a path belongs to (a template where it has a parameter), for labels and span names."""
    if path in ROUTES:
        return path
    if path.startswith("/static/"):
        return "/static"
    for start, template in TEMPLATES:
        if path.startswith(start):
            return template
    if path.startswith("/openai/deployments/") and path.endswith("/chat/completions"):
        return "/openai/deployments/{deployment}/chat/completions"
    if path.startswith("/v1/responses/"):  # a stored response's calls
        action = path.rpartition("/")[2]
        return "/v1/responses/{response_id}" + (f"/{action}" if action in ("cancel", "input_items") else "")
    return "other"


def format_line(record: RequestRecord, fmt: str) -> str:
    # Once per request: a shallow copy (asdict copies deeply) and orjson (several times stdlib json's speed).
    fields = dict(vars(record))
    del fields["started"], fields["completed"]
    if fmt == "json":
        return orjson.dumps(fields).decode()
    return " ".join(f"{key}={value}" for key, value in fields.items() if value not in (None, "-", 0, False))


class ObserveMiddleware:
    """Gives every request an id (the client's X-Request-ID if valid), returns it, and logs and counts the request."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        log_format: str,
        internal_error: Callable[[str], ASGIApp],
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log_format = log_format
        self.internal_error = internal_error  # the 500 response, rendered by errors.py (which imports this module)
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if VALID_REQUEST_ID.match(given) else os.urandom(16).hex()
        path = scope["path"]
        record = RequestRecord(request_id, scope["method"], route_of(path))
        route = record.route
        token = current_record.set(record)
        span = self.tracing.server(scope, record)  # the whole request, its stream included

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record.completed = True
            await send(message)

        async def receive_watching() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and record.status and not record.completed:
                record.client_disconnected = True
            return message

        try:
            await self.app(scope, receive_watching, send_with_id)
        except Exception as exc:
            # A bug, not the client's doing: one traceback, and the response is traced like every other one.
            record.exception = type(exc).__name__
            bug_log.exception("unexpected %s on %s (request %s)", record.exception, route, request_id)
            if not record.status:
                await self.internal_error(path)(scope, receive, send_with_id)
        finally:
            record.duration_ms = round((time.perf_counter() - record.started) * 1000, 2)
            span.finish(record)
            current_record.reset(token)
            if route != "/static":
                self.metrics.observe(record)
                log.info(format_line(record, self.log_format))
