"""One attempt on one upstream over httpx: the request in its API's shape, authenticated, read to the first token."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from chatsse import __version__
from chatsse.chunks import ChunkTranslator
from chatsse.errors import StoredResponseNotFound, UpstreamAuthFailed, UpstreamDisconnected, UpstreamUnavailable
from chatsse.record import current_record
from chatsse.responses.translate import ResponsesTranslator
from chatsse.schema import ChatRequest
from chatsse.tracing import NO_ATTEMPT, AttemptSpan
from chatsse.upstreams.auth import EntraTokens
from chatsse.upstreams.config import UpstreamConfig
from chatsse.upstreams.failures import from_transport_error, from_upstream_status
from chatsse.upstreams.reply import UpstreamReply
from chatsse.upstreams.shapes import SHAPES

log = logging.getLogger("chatsse.upstream")

MAX_ERROR_BODY = 64 * 1024
# Bodies larger than this (images as data: URLs) go to aiohttp in pieces: written whole, they would hold the event
# loop while the socket drains, and aiohttp warns above this size.
LARGE_BODY = 1024 * 1024
BODY_PIECE = 256 * 1024
BASE_HEADERS = {
    "content-type": "application/json",
    "accept": "text/event-stream",
    "accept-encoding": "identity",  # an event stream is read as it comes, raw (reply.py): not worth compressing
    "user-agent": f"chatsse/{__version__}",
}


@dataclass(frozen=True)
class _Prepared:
    upstream: UpstreamConfig
    url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, Any]


def new_http_client(timeout: float) -> httpx.AsyncClient:
    """The one pooled client the app shares; every timeout is the allowed upstream silence."""
    # aiohttp's C HTTP parser under the httpx API: less CPU per chunk than httpcore (figures in bench/REPORT.md).
    # One connection per open stream: a pool cap would queue streams behind each other.
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=1_000_000, max_keepalive_connections=100))
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
    )


class UpstreamClient:
    """Sends a chat to one upstream; Entra upstreams get a Bearer token and one retry after a 401."""

    def __init__(self, http: httpx.AsyncClient, tokens: EntraTokens | None, ping_seconds: float) -> None:
        self.http = http
        self.tokens = tokens
        self.ping_seconds = ping_seconds
        self._by_name: dict[str, _Prepared] = {}

    async def attempt(
        self, upstream: UpstreamConfig, request: ChatRequest, trace: AttemptSpan = NO_ATTEMPT
    ) -> UpstreamReply:
        """`trace`: the attempt's span, whose headers carry it to the upstream (traceparent) when tracing is on."""
        # A copy of exactly its size: orjson's own bytes keep a 4 KB buffer, held as long as the reply is open.
        content = bytes(memoryview(orjson.dumps(SHAPES[upstream.api].body(upstream, request))))
        if not upstream.entra:
            return await self._send(upstream, content, None, request, trace)
        assert self.tokens is not None, "an Entra upstream without a token source"
        token = await self.tokens.token()
        try:
            return await self._send(upstream, content, f"Bearer {token}", request, trace)
        except UpstreamAuthFailed:
            log.warning("upstream %s rejected the Entra token; refreshing it and trying once more", upstream.name)
            await self.tokens.refresh_after_rejection(token)
            token = await self.tokens.token()
            return await self._send(upstream, content, f"Bearer {token}", request, trace)

    async def call(self, upstream: UpstreamConfig, method: str, suffix: str, query: dict[str, str]) -> httpx.Response:
        """A stored response's own call (`suffix`: `/{id}`, `/{id}/cancel`, ...) on the upstream that made it, its
        body left to stream; an error answer is raised as ours."""
        prepared = self._prepared(upstream)
        url = prepared.url.copy_with(path=prepared.url.path + suffix).copy_merge_params(query)
        headers = dict(prepared.headers)
        if upstream.entra:
            assert self.tokens is not None, "an Entra upstream without a token source"
            headers["authorization"] = f"Bearer {await self.tokens.token()}"
        request = httpx.Request(method, url, headers=headers, extensions=prepared.extensions)
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise from_transport_error(exc) from None
        if response.status_code < 400:
            return response
        try:
            body = await _read_bounded(response)
        finally:
            await response.aclose()
        error = from_upstream_status(response.status_code, body, response.headers)
        log.warning("upstream %s answered %d to %s %s", upstream.name, response.status_code, method, suffix)
        raise StoredResponseNotFound() if response.status_code == 404 else error

    def _prepared(self, upstream: UpstreamConfig) -> _Prepared:
        """The URL, headers and timeout of an upstream's requests, built once: httpx's request building (URL
        parsing, query and header merging) was a good part of a short reply's CPU (bench/REPORT.md, at scale)."""
        prepared = self._by_name.get(upstream.name)
        if prepared is None or prepared.upstream is not upstream:
            shape = SHAPES[upstream.api]
            url = httpx.URL(shape.url(upstream), params=shape.params(upstream))
            headers = {**BASE_HEADERS, **({} if upstream.entra else shape.key_headers(upstream.api_key))}
            timeout = httpx.Timeout(upstream.timeout) if upstream.timeout else self.http.timeout
            prepared = _Prepared(upstream, url, headers, {"timeout": timeout.as_dict()})
            self._by_name[upstream.name] = prepared
        return prepared

    async def _send(
        self,
        upstream: UpstreamConfig,
        content: bytes,
        authorization: str | None,
        chat: ChatRequest,
        trace: AttemptSpan = NO_ATTEMPT,
    ) -> UpstreamReply:
        prepared = self._prepared(upstream)
        headers = prepared.headers if authorization is None else {**prepared.headers, "authorization": authorization}
        if trace.enabled:
            headers = {**headers, **trace.headers}
        body: bytes | AsyncIterator[bytes] = content
        if len(content) > LARGE_BODY:
            headers, body = {**headers, "content-length": str(len(content))}, _pieces(content)
        request = httpx.Request("POST", prepared.url, headers=headers, content=body, extensions=prepared.extensions)
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            error = from_transport_error(exc)
            if isinstance(error, UpstreamDisconnected):
                # Dropped before any answer (a dying server, a stale pooled connection): safe to ask again.
                error = UpstreamUnavailable(
                    "The upstream closed the connection without answering, even after retrying."
                )
            log.warning("upstream %s request failed: %s (%s)", upstream.name, error.code, type(exc).__name__)
            raise error from None
        record = current_record.get()
        if record is not None:
            record.upstream_status = response.status_code
        try:
            if response.status_code != 200:
                body = await _read_bounded(response)
                error = from_upstream_status(response.status_code, body, response.headers)
                log.warning(
                    "upstream %s answered %d: %s (apim-request-id %s)",
                    upstream.name,
                    response.status_code,
                    error.code,
                    response.headers.get("apim-request-id", "-"),
                )
                raise error
            translator = ChunkTranslator(upstream.reasoning, chat.rich)
            if upstream.protocol == "responses":
                passthrough = chat.responses_body is not None  # the /v1/responses face: the events as they come
                translator = ResponsesTranslator(upstream.reasoning, chat.rich, passthrough)
            reply = UpstreamReply(response, upstream.name, translator)
            reply.trace = trace
            try:
                await reply.read_until_first_content(patience=self.ping_seconds)
            except BaseException:
                await reply.aclose()
                raise
            return reply
        except BaseException:
            await response.aclose()
            raise


async def _pieces(content: bytes) -> AsyncIterator[bytes]:
    view = memoryview(content)
    for start in range(0, len(view), BODY_PIECE):
        yield bytes(view[start : start + BODY_PIECE])


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
