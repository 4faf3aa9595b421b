"""OpenAI's Responses API on chatsse: `POST /v1/responses`, streamed (Responses events) or not (one Response
object), over any upstream: translated for one speaking chat completions, relayed unchanged from one speaking
Responses (`chatsse.responses`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatsse.relay import ChatRelay
from chatsse.responses import ResponseStream, parse_responses
from chatsse.schema import load_json
from chatsse.server.body import read_media_body
from chatsse.server.response import STREAM_HEADERS, RelayResponse


class ResponsesFace:
    """The route the Agents SDK, the AI SDK's `openai()` and Codex CLI call, with `base_url=<gateway>/v1`."""

    def __init__(self, relay: ChatRelay) -> None:
        self.relay = relay
        self.settings = relay.settings

    async def create(self, request: Request) -> Response:
        settings = self.settings
        parsed = parse_responses(load_json(await read_media_body(request, settings)), self.relay.models)
        opened = await self.relay.open(parsed.chat)
        stream = ResponseStream(parsed.chat.model, parsed.body)
        if parsed.stream:
            headers = {**STREAM_HEADERS, **opened.headers}
            return RelayResponse(opened.events, stream, headers, settings.ping_seconds, opened.background)
        try:
            result, status = await stream.collect(opened.events)
        finally:
            if opened.background is not None:
                await opened.background()
        return JSONResponse(result, status_code=status, headers=opened.headers)
