"""The chat route: validate the request, open the upstream before answering, relay its events as SSE."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from chatsse.errors import (
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestTimeout,
    StreamNotFound,
    UnsupportedMediaType,
)
from chatsse.observe import current_record
from chatsse.resume import StreamKeeper, parse_event_id
from chatsse.schema import ChatRequest, parse_chat_body, parse_chat_query, parse_query
from chatsse.settings import Settings
from chatsse.stream_response import RelayResponse
from chatsse.streams import StreamRegistry
from chatsse.upstreams import UpstreamReply, Upstreams

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# EventSource reconnects by itself whenever a stream ends; clients should close on done/error, and this
# slows down the ones that do not.
EVENTSOURCE_RETRY = b"retry: 30000\n\n"
# With resume on, a reconnecting EventSource continues the reply (it sends Last-Event-ID), so come back soon.
RESUME_RETRY = b"retry: 1500\n\n"


@dataclass
class Opened:
    """A reply that has its first token: our event bytes, the headers that name it, and what closes it."""

    events: AsyncIterator[bytes]
    headers: dict[str, str]
    background: BackgroundTask | None = None


class ChatRelay:
    """Owns the chat endpoint."""

    def __init__(
        self, settings: Settings, streams: StreamRegistry, upstreams: Upstreams, keeper: StreamKeeper | None
    ) -> None:
        self.settings = settings
        self.streams = streams
        self.upstreams = upstreams
        self.keeper = keeper
        self.models = settings.models
        self.eventsource_retry = EVENTSOURCE_RETRY if keeper is None else RESUME_RETRY

    async def stream(self, request: Request) -> Response:
        """POST with a JSON body, or GET `?message=` for EventSource."""
        if request.method == "HEAD":
            raise MethodNotAllowed("HEAD would start a chat; use GET (EventSource) or POST.")
        if request.method == "GET":
            last_event_id = request.headers.get("last-event-id")
            if last_event_id and self.keeper is not None:
                # A native EventSource reconnecting: continue its reply rather than ask the question again.
                found = parse_event_id(last_event_id)
                if found is None:
                    raise StreamNotFound()
                return await self._resume(*found)
            chat = parse_chat_query(_query(request, self.settings.max_body_bytes), self.models)
            prefix = self.eventsource_retry
        else:
            chat = parse_chat_body(await self.read_json_body(request), self.models)
            prefix = b""
        opened = await self.open(chat, prefix)
        return self.sse_response(opened.events, {**STREAM_HEADERS, **opened.headers}, opened.background)

    async def read_json_body(self, request: Request) -> bytes:
        """The request body, checked for type, size and time (415, 413, 408)."""
        _require_json(request)
        try:
            # asyncio's own timeout: anyio's fail_after cost a short reply 2% of its CPU (bench/REPORT.md).
            async with asyncio.timeout(self.settings.body_timeout):
                return await _read_body(request, self.settings.max_body_bytes)
        except TimeoutError:
            raise RequestTimeout() from None

    async def open(self, chat: ChatRequest, prefix: bytes = b"", chat_id: str | None = None) -> Opened:
        """Open the upstream and read to the first token (failures before it raise); our events from there on.
        Every face (ours, useChat's, OpenAI's) starts its replies here."""
        self.streams.admit()
        reply = None
        try:
            reply = await self.upstreams.open(self._with_system_prompt(chat))
        finally:
            self.streams.opened(reply)
        headers = {"X-Chatsse-Upstream": reply.upstream}
        if self.keeper is not None:
            stream = self.keeper.keep(reply, self.owner(), chat_id)
            events = self.keeper.follow_local(stream, 0, prefix)
            return Opened(events, {**headers, "X-Chatsse-Stream": stream.id})
        # sse-starlette skips the generator's `finally` when the client leaves before its first event
        # (sse-starlette #156); closing in a background task too makes sure the upstream is released.
        return Opened(reply.events(prefix), headers, BackgroundTask(self._finished, reply))

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

    async def _resume(self, stream_id: str, after: int) -> Response:
        if self.keeper is None:
            raise StreamNotFound("Replies are not kept on this gateway (CHATSSE_RESUME_SECONDS is 0).")
        events = await self.keeper.follow(stream_id, self.owner(), after, self.eventsource_retry)
        return self.sse_response(events, {**STREAM_HEADERS, "X-Chatsse-Stream": stream_id})

    def sse_response(
        self, events: AsyncIterator[bytes], headers: dict[str, str], background: BackgroundTask | None = None
    ) -> Response:
        return RelayResponse(events, headers, self.settings.ping_seconds, background)

    def owner(self) -> str | None:
        """Who may follow a kept stream: the caller key that started it (with keys off, whoever has its id)."""
        record = current_record.get()
        return record.caller if self.settings.api_keys and record is not None else None

    async def _finished(self, reply: UpstreamReply) -> None:
        await reply.aclose()
        self.streams.closed(reply)

    def _with_system_prompt(self, chat: ChatRequest) -> ChatRequest:
        if not self.settings.system_prompt:
            return chat
        return dataclasses.replace(
            chat, messages=[{"role": "system", "content": self.settings.system_prompt}, *chat.messages]
        )


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request is larger than {limit} bytes (CHATSSE_MAX_BODY_BYTES).")


def _query(request: Request, limit: int) -> dict[str, str]:
    query = parse_query(request.scope["query_string"])
    if len(query.get("message", "").encode()) > limit:
        raise _too_large(limit)
    return query


def _require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType()


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (never read whole into memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    return b"".join(parts)
