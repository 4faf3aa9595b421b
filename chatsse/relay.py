"""The chat route: validate the request, open the upstream before answering, relay its events as SSE."""

from __future__ import annotations

from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from chatsse.errors import PayloadTooLarge, UnsupportedMediaType
from chatsse.schema import parse_chat_body
from chatsse.settings import Settings
from chatsse.upstream import AzureClient

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ChatRelay:
    """Owns the chat endpoint; `upstream` is attached by the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.upstream: AzureClient | None = None

    async def stream(self, request: Request) -> Response:
        _require_json(request)
        body = await _read_body(request, self.settings.max_body_bytes)
        messages = parse_chat_body(body, self.settings.system_prompt)
        assert self.upstream is not None, "the app lifespan did not run"
        reply = await self.upstream.open(messages)
        return EventSourceResponse(
            reply.events(),
            headers=STREAM_HEADERS,
            ping=self.settings.ping_seconds,
            sep="\n",
            # sse-starlette skips the generator's `finally` when the client leaves before its first
            # event (sse-starlette #156); closing here too makes sure the upstream is released.
            background=BackgroundTask(reply.aclose),
        )


def _require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType()


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (never read whole into memory)."""
    too_large = PayloadTooLarge(f"The request body is larger than {limit} bytes (CHATSSE_MAX_BODY_BYTES).")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_large
        parts.append(part)
    return b"".join(parts)
