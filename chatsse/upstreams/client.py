"""One attempt on one upstream over httpx: the request in its API's shape, authenticated, read to the first token."""

from __future__ import annotations

import logging

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from chatsse import __version__
from chatsse.errors import UpstreamAuthFailed, UpstreamDisconnected, UpstreamUnavailable
from chatsse.observe import current_record
from chatsse.schema import ChatRequest
from chatsse.upstream_config import UpstreamConfig
from chatsse.upstreams.auth import EntraTokens
from chatsse.upstreams.failures import from_transport_error, from_upstream_status
from chatsse.upstreams.reply import UpstreamReply
from chatsse.upstreams.shapes import SHAPES

log = logging.getLogger("chatsse.upstream")

MAX_ERROR_BODY = 64 * 1024


def new_http_client(timeout: float) -> httpx.AsyncClient:
    """The one pooled client the app shares; every timeout is the allowed upstream silence."""
    # aiohttp's C HTTP parser under the httpx API: a third less CPU per chunk than httpcore (bench/REPORT.md).
    # One connection per open stream: a pool cap would queue streams behind each other.
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=1_000_000, max_keepalive_connections=100))
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        headers={"user-agent": f"chatsse/{__version__}"},
    )


class UpstreamClient:
    """Sends a chat to one upstream; Entra upstreams get a Bearer token and one retry after a 401."""

    def __init__(self, http: httpx.AsyncClient, tokens: EntraTokens | None, ping_seconds: float) -> None:
        self.http = http
        self.tokens = tokens
        self.ping_seconds = ping_seconds

    async def attempt(self, upstream: UpstreamConfig, request: ChatRequest) -> UpstreamReply:
        shape = SHAPES[upstream.api]
        content = orjson.dumps(shape.body(upstream, request))
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if not upstream.entra:
            return await self._send(upstream, content, {**headers, **shape.key_headers(upstream.api_key)})
        assert self.tokens is not None, "an Entra upstream without a token source"
        token = await self.tokens.token()
        try:
            return await self._send(upstream, content, {**headers, "authorization": f"Bearer {token}"})
        except UpstreamAuthFailed:
            log.warning("upstream %s rejected the Entra token; refreshing it and trying once more", upstream.name)
            await self.tokens.refresh_after_rejection(token)
            token = await self.tokens.token()
            return await self._send(upstream, content, {**headers, "authorization": f"Bearer {token}"})

    async def _send(self, upstream: UpstreamConfig, content: bytes, headers: dict[str, str]) -> UpstreamReply:
        shape = SHAPES[upstream.api]
        request = self.http.build_request(
            "POST",
            shape.url(upstream),
            params=shape.params(upstream),
            headers=headers,
            content=content,
            timeout=httpx.Timeout(upstream.timeout) if upstream.timeout else httpx.USE_CLIENT_DEFAULT,
        )
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
            reply = UpstreamReply(response, upstream.name, upstream.reasoning)
            try:
                await reply.read_until_first_content(patience=self.ping_seconds)
            except BaseException:
                await reply.aclose()
                raise
            return reply
        except BaseException:
            await response.aclose()
            raise


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
