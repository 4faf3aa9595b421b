"""chatsse's own face: `POST|GET /api/v1/chat/stream`, `GET|DELETE /api/v1/chat/stream/{id}` and
`GET /api/v1/usage`, with events `{"content"}`, `{"reasoning"}`, `{"done"}` and `{"error"}` (each event's
`payload()`), ids when replies are kept."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatsse.errors import InvalidRequest, MethodNotAllowed, StreamNotFound
from chatsse.events import Batch
from chatsse.relay import ChatRelay
from chatsse.resume import parse_event_id
from chatsse.schema import parse_chat_body, parse_chat_query, parse_query
from chatsse.server.body import bounded_query, read_json_body
from chatsse.server.response import STREAM_HEADERS, RelayResponse
from chatsse.sse import encode_json_event

# EventSource reconnects by itself whenever a stream ends; clients should close on done/error, and this
# slows down the ones that do not.
EVENTSOURCE_RETRY = b"retry: 30000\n\n"
# With resume on, a reconnecting EventSource continues the reply (it sends Last-Event-ID), so come back soon.
RESUME_RETRY = b"retry: 1500\n\n"


class NativeFace:
    """The chat stream routes."""

    def __init__(self, relay: ChatRelay) -> None:
        self.relay = relay
        self.settings = relay.settings
        self.eventsource_retry = EVENTSOURCE_RETRY if relay.keeper is None else RESUME_RETRY

    async def stream(self, request: Request) -> Response:
        """POST with a JSON body, or GET `?message=` for EventSource."""
        if request.method == "HEAD":
            raise MethodNotAllowed("HEAD would start a chat; use GET (EventSource) or POST.")
        if request.method == "GET":
            last_event_id = request.headers.get("last-event-id")
            if last_event_id and self.relay.keeper is not None:
                # A native EventSource reconnecting: continue its reply rather than ask the question again.
                found = parse_event_id(last_event_id)
                if found is None:
                    raise StreamNotFound()
                return await self._resume(*found)
            chat = parse_chat_query(bounded_query(request, self.settings.max_body_bytes), self.relay.models)
            prefix = self.eventsource_retry
        else:
            body = await read_json_body(request, self.settings.max_body_bytes, self.settings.body_timeout)
            chat = parse_chat_body(body, self.relay.models)
            prefix = b""
        opened = await self.relay.open(chat, request.receive)
        frame = NativeFrames(opened.stream_id, prefix)
        headers = {**STREAM_HEADERS, **opened.headers}
        return RelayResponse(opened.events, frame, headers, self.settings.ping_seconds, opened.background)

    async def resume(self, request: Request) -> Response:
        """`GET /api/v1/chat/stream/{stream_id}`: the events after Last-Event-ID (or all), then the live rest."""
        stream_id = request.path_params["stream_id"]
        last = request.headers.get("last-event-id") or parse_query(request.scope["query_string"]).get("last_event_id")
        after = 0
        if last:
            found = parse_event_id(last)
            if found is None or found[0] != stream_id:
                raise InvalidRequest("Last-Event-ID (or last_event_id) must be an event id of this stream.")
            after = found[1]
        return await self._resume(stream_id, after)

    async def stop(self, request: Request) -> Response:
        """`DELETE /api/v1/chat/stream/{stream_id}`: end a kept reply now; its followers get done (`stopped`)."""
        await self.relay.stop(request.path_params["stream_id"])
        return Response(status_code=204)

    async def usage(self, request: Request) -> Response:
        """`GET /api/v1/usage`: the calling caller's limits and what is left of them."""
        return JSONResponse(await self.relay.usage())

    async def _resume(self, stream_id: str, after: int) -> Response:
        events: AsyncIterator[Batch] = await self.relay.follow(stream_id, after)
        frame = NativeFrames(stream_id, self.eventsource_retry)
        headers = {**STREAM_HEADERS, "X-Chatsse-Stream": stream_id}
        return RelayResponse(events, frame, headers, self.settings.ping_seconds)


class NativeFrames:
    """Our events as SSE, with `id: <stream>.<seq>` on the events of a kept reply; `prefix` (a retry hint) leads
    the first write."""

    def __init__(self, stream_id: str | None = None, prefix: bytes = b"") -> None:
        self.id_prefix = stream_id.encode() + b"." if stream_id else b""
        self.prefix = prefix

    def __call__(self, batch: Batch) -> bytes:
        out = [self.prefix] if self.prefix else []
        self.prefix = b""
        if batch.first_seq and self.id_prefix:
            numbered = enumerate(batch.events, batch.first_seq)
            out += [encode_json_event(event.payload(), b"%s%d" % (self.id_prefix, seq)) for seq, event in numbered]
        else:
            out += [encode_json_event(event.payload()) for event in batch.events]
        return b"".join(out)
