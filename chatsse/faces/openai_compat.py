"""OpenAI's chat completions on chatsse: `POST /v1/chat/completions` (streamed or not, and Azure's own shape of it,
`POST /openai/deployments/{deployment}/chat/completions`) and `GET /v1/models`, with
every request field Azure and OpenAI accept (`chatsse.completion_request`) and every part of a reply relayed
(`openai_chunks`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatsse.callers.identity import current_caller
from chatsse.completion_request import parse_completion
from chatsse.faces.openai_chunks import Completion
from chatsse.relay import ChatRelay
from chatsse.schema import load_json
from chatsse.server.body import read_media_body


class OpenAIFace:
    """The routes an OpenAI SDK calls, with `base_url=<gateway>/v1` and a caller key as its api_key."""

    def __init__(self, relay: ChatRelay) -> None:
        self.relay = relay
        self.settings = relay.settings

    async def models(self, request: Request) -> Response:
        models = self.relay.models_for(current_caller.get())
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "chatsse"} for name in models]
        return JSONResponse({"object": "list", "data": data})

    async def completions(self, request: Request) -> Response:
        settings = self.settings
        body = load_json(await read_media_body(request, settings))
        deployment = request.path_params.get("deployment")
        if deployment is not None and isinstance(body, dict) and "model" not in body:
            # `POST /openai/deployments/{deployment}/chat/completions`, as Azure's SDKs (the openai package's
            # AzureOpenAI) call it: the deployment names the model group.
            body = {**body, "model": deployment}
        chat, stream, include_usage = parse_completion(body, self.relay.models)
        opened = await self.relay.open(chat, request.receive)
        return await opened.answer(Completion(chat.model, include_usage), stream, settings.ping_seconds)
