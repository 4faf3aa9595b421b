"""The Azure OpenAI client: sends the streaming chat request over httpx, retries what may be retried."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from httpx_aiohttp import AiohttpTransport

from chatsse import __version__
from chatsse.chunks import ChunkTranslator
from chatsse.errors import (
    ChatSSEError,
    ServerShutdown,
    UpstreamDisconnected,
    UpstreamUnavailable,
    from_transport_error,
    from_upstream_status,
)
from chatsse.observe import current_record
from chatsse.schema import Message
from chatsse.settings import Settings
from chatsse.sse import SSEDecoder

log = logging.getLogger("chatsse.upstream")

MAX_ERROR_BODY = 64 * 1024
BACKOFF_BASE_SECONDS = 0.25


def new_http_client(settings: Settings) -> httpx.AsyncClient:
    """The one pooled client the app shares; every timeout is the allowed upstream silence."""
    # aiohttp's C HTTP parser under the httpx API: a third less CPU per chunk than httpcore (bench/REPORT.md).
    # One connection per open stream: a pool cap would queue streams behind each other.
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=1_000_000, max_keepalive_connections=100))
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(settings.upstream_timeout),
        headers={"user-agent": f"chatsse/{__version__}"},
    )


class UpstreamReply:
    """An upstream reply that has produced its first content (or ended); `events()` relays the rest."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.translator = ChunkTranslator()
        self._decoder = SSEDecoder()
        self._reads = response.aiter_bytes()
        self._first = b""
        self._shutting_down = False
        self._pending: asyncio.Future[bytes] | None = None

    async def read_until_first_content(self, patience: float = 0) -> None:
        """Read until there is something to send; a failure before that is raised, to become an HTTP error.

        After `patience` seconds (0: no limit) with no content yet, return anyway: the stream starts and its
        heartbeats flow, because PaaS routers give up on a response whose first byte is late (Heroku: 30 s)
        and slow models can think for longer. The read under way carries on in `events()`."""
        deadline = time.monotonic() + patience if patience else None
        while not self._first and not self.translator.over:
            try:
                if deadline is None:  # no heartbeats: read directly, without a task per read
                    raw = await anext(self._reads)
                else:
                    if self._pending is None:
                        self._pending = asyncio.ensure_future(anext(self._reads))
                    done, _ = await asyncio.wait({self._pending}, timeout=max(0.0, deadline - time.monotonic()))
                    if not done:
                        return
                    pending, self._pending = self._pending, None
                    raw = pending.result()
            except StopAsyncIteration:
                self.translator.end_of_stream()
                break
            except httpx.HTTPError as exc:
                raise from_transport_error(exc) from None
            self._first = self.translator.feed(self._decoder.decode(raw))
        if not self._first and self.translator.failure is not None:
            raise self.translator.failure
        self._note_first_token()

    def _note_first_token(self) -> None:
        record = current_record.get()
        if record is not None and record.ttft_ms is None and self.translator.content_events:
            record.first_token()

    async def _reads_after_early_start(self) -> AsyncIterator[bytes]:
        """The upstream reads when the stream started before any content: the read under way, then the rest."""
        assert self._pending is not None
        pending, self._pending = self._pending, None
        try:
            yield await pending
        except StopAsyncIteration:
            return
        self._note_first_token()
        async for raw in self._reads:
            yield raw
            self._note_first_token()

    async def events(self, prefix: bytes = b"") -> AsyncIterator[bytes]:
        """Our event bytes, one write per upstream read, ending in a done event or an error event."""
        translator = self.translator
        try:
            out = prefix + self._first
            if not translator.over:
                if out:
                    yield out
                out = b""
                try:
                    reads = self._reads if self._pending is None else self._reads_after_early_start()
                    async for raw in reads:
                        out = translator.feed(self._decoder.decode(raw))
                        if translator.over:
                            break
                        if out:
                            yield out
                        out = b""
                    else:
                        translator.end_of_stream()
                except httpx.HTTPError as exc:
                    translator.failure = from_transport_error(exc)
            if self._shutting_down and not translator.done:
                translator.failure = ServerShutdown()
            if translator.failure is not None:
                log.warning("upstream failed mid-stream: %s", translator.failure.code)
                out += translator.failure.to_event()
            if out:
                yield out
        finally:
            record = current_record.get()
            if record is not None:
                record.content_chunks = translator.content_events
                record.finish_reason = translator.finish_reason
            await self.response.aclose()

    async def aclose(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        await self.response.aclose()

    async def shut_down(self) -> None:
        """End this stream now (server drain): the reader sees the upstream close and sends server_shutdown."""
        self._shutting_down = True
        await self.response.aclose()


class AzureClient:
    """Opens streaming chat completions on one Azure deployment."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http

    def request_body(self, messages: list[Message]) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": messages, "stream": True}
        if self.settings.asks_for_usage:
            body["stream_options"] = {"include_usage": True}
        return body

    async def open(self, messages: list[Message]) -> UpstreamReply:
        """Open the stream, retrying rate limits, server errors and refused connections within the budget."""
        content = json.dumps(self.request_body(messages), ensure_ascii=False).encode()
        waited = 0.0
        attempt = 0
        while True:
            try:
                return await self._attempt(content)
            except ChatSSEError as error:
                record = current_record.get()
                delay = error.retry_after if error.retry_after is not None else _backoff(attempt)
                if not error.retryable or attempt >= self.settings.max_retries:
                    raise
                if waited + delay > self.settings.max_retry_wait:
                    log.warning("upstream %s: asked to wait %.1fs, over the retry budget", error.code, delay)
                    raise
                log.info("upstream %s: retrying in %.2fs (attempt %d)", error.code, delay, attempt + 1)
                await anyio.sleep(delay)
                waited += delay
                attempt += 1
                if record is not None:
                    record.retries = attempt

    async def _attempt(self, content: bytes) -> UpstreamReply:
        settings = self.settings
        request = self.http.build_request(
            "POST",
            settings.chat_url,
            params={"api-version": settings.api_version},
            headers={"api-key": settings.api_key, "content-type": "application/json", "accept": "text/event-stream"},
            content=content,
        )
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            error = from_transport_error(exc)
            if isinstance(error, UpstreamDisconnected):
                # Dropped before any answer (a dying server, a stale pooled connection): safe to ask again.
                error = UpstreamUnavailable(
                    "Azure OpenAI closed the connection without answering, even after retrying."
                )
            log.warning("upstream request failed: %s (%s)", error.code, type(exc).__name__)
            raise error from None
        record = current_record.get()
        if record is not None:
            record.upstream_status = response.status_code
        try:
            if response.status_code != 200:
                body = await _read_bounded(response)
                error = from_upstream_status(response.status_code, body, response.headers)
                log.warning(
                    "upstream answered %d: %s (apim-request-id %s)",
                    response.status_code,
                    error.code,
                    response.headers.get("apim-request-id", "-"),
                )
                raise error
            reply = UpstreamReply(response)
            try:
                await reply.read_until_first_content(patience=settings.ping_seconds)
            except BaseException:
                await reply.aclose()
                raise
            return reply
        except BaseException:
            await response.aclose()
            raise


def _backoff(attempt: int) -> float:
    # Full jitter keeps many gateway workers from retrying in lockstep.
    return float(BACKOFF_BASE_SECONDS * 2.0**attempt * (0.5 + random.random() / 2))


async def _read_bounded(response: httpx.Response) -> bytes:
    body = b""
    try:
        async for part in response.aiter_bytes():
            body += part
            if len(body) > MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass  # an unreadable error body still maps by its status
    return body
