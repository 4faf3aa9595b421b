"""OpenAI's Responses API on chatsse: `POST /v1/responses`, streamed (Responses events) or not (one Response
object), over any upstream: translated for one speaking chat completions, relayed unchanged from one speaking
Responses (`chatsse.responses`); and a stored response's own calls, on the upstream that made it, for the caller
that made it."""

from __future__ import annotations

import dataclasses

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from chatsse.errors import StoredResponseNotFound
from chatsse.relay import ChatRelay
from chatsse.responses import ResponseStream, parse_responses
from chatsse.schema import load_json
from chatsse.server.body import read_media_body
from chatsse.server.response import STREAM_HEADERS

# The query parameters a stored response's calls take, passed on as given.
STORED_QUERY = ("stream", "starting_after", "include", "include_obfuscation", "after", "before", "limit", "order")


class ResponsesFace:
    """The routes the Agents SDK, the AI SDK's `openai()` and Codex CLI call, with `base_url=<gateway>/v1`."""

    def __init__(self, relay: ChatRelay) -> None:
        self.relay = relay
        self.settings = relay.settings

    async def create(self, request: Request) -> Response:
        settings = self.settings
        parsed = parse_responses(load_json(await read_media_body(request, settings)), self.relay.models)
        chat = parsed.chat
        previous = parsed.body.get("previous_response_id")
        if previous is not None:
            if not isinstance(previous, str):
                raise StoredResponseNotFound(param="previous_response_id")
            # Only the upstream that made it holds it: failover never sends a chained request elsewhere.
            upstream = await self.relay.stored.upstream_of(previous, self.relay.owner())
            if upstream is None:
                raise StoredResponseNotFound(param="previous_response_id")
            chat = dataclasses.replace(chat, pinned=upstream)
        opened = await self.relay.open(chat, request.receive)
        return await opened.answer(ResponseStream(chat.model, parsed.body), parsed.stream, settings.ping_seconds)

    async def retrieve(self, request: Request) -> Response:
        """`GET /v1/responses/{id}` (with `?stream=true&starting_after=N`, a background response's events), and
        `DELETE`."""
        response = await self._stored_call(request, "")
        if request.method == "DELETE":
            await self.relay.stored.forget(request.path_params["response_id"])
        return response

    async def cancel(self, request: Request) -> Response:
        return await self._stored_call(request, "/cancel")

    async def input_items(self, request: Request) -> Response:
        return await self._stored_call(request, "/input_items")

    async def _stored_call(self, request: Request, action: str) -> Response:
        response_id = request.path_params["response_id"]
        name = await self.relay.stored.upstream_of(response_id, self.relay.owner())
        upstream = self.relay.upstreams.by_name.get(name) if name is not None else None
        client = self.relay.upstreams.client
        if upstream is None or client is None:
            raise StoredResponseNotFound()
        query = {key: value for key, value in request.query_params.items() if key in STORED_QUERY}
        answer = await client.call(upstream, request.method, f"/{response_id}{action}", query)
        headers = {"X-Chatsse-Upstream": upstream.name}
        if answer.headers.get("content-type", "").startswith("text/event-stream"):
            return StreamingResponse(
                answer.aiter_raw(),
                media_type="text/event-stream",
                headers={**STREAM_HEADERS, **headers},
                background=BackgroundTask(answer.aclose),
            )
        try:
            body = await answer.aread()
        finally:
            await answer.aclose()
        return Response(body, answer.status_code, headers, media_type="application/json")
