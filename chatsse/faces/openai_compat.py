"""OpenAI's chat completions on chatsse: `POST /v1/chat/completions` (streamed or not) and `GET /v1/models`."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatsse.callers.identity import current_caller
from chatsse.errors import InvalidRequest, ModelNotFound
from chatsse.events import Batch, Content, Done, Failed, Reasoning
from chatsse.relay import ChatRelay
from chatsse.schema import ChatRequest, load_json, parse_params, parse_turns
from chatsse.server.body import read_json_body
from chatsse.server.response import STREAM_HEADERS, RelayResponse
from chatsse.sse import DATA_DONE, encode_json_event

FIELDS = (
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "reasoning_effort",
)


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
        body = load_json(await read_json_body(request, self.settings.max_body_bytes, self.settings.body_timeout))
        chat, stream, include_usage = self._parse(body)
        opened = await self.relay.open(chat)
        completion = Completion(chat.model, include_usage)
        if stream:
            headers = {**STREAM_HEADERS, **opened.headers}
            return RelayResponse(opened.events, completion, headers, self.settings.ping_seconds, opened.background)
        try:
            result, status = await completion.collect(opened.events)
        finally:
            if opened.background is not None:
                await opened.background()
        return JSONResponse(result, status_code=status, headers=opened.headers)

    def _parse(self, body: Any) -> tuple[ChatRequest, bool, bool]:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object (a chat completion request).")
        unknown = [key for key in body if key not in FIELDS]
        if unknown:
            error = InvalidRequest(
                f"Unrecognized request argument: {unknown[0][:40]!r}; chatsse accepts {', '.join(FIELDS)}."
            )
            error.param = unknown[0][:40]
            raise error
        model = body.get("model")
        if not isinstance(model, str) or not model:
            error = InvalidRequest('"model" is required: one of GET /v1/models.')
            error.param = "model"
            raise error
        if model not in self.relay.models:
            raise ModelNotFound(f"The model {model[:60]!r} does not exist on this gateway. GET /v1/models lists them.")
        messages = body.get("messages")
        if isinstance(messages, list):  # OpenAI's "developer" turns are system turns to the models chatsse serves
            messages = [
                {**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m for m in messages
            ]
        params = parse_params(body)
        if "max_completion_tokens" in body:
            limit = parse_params({"max_tokens": body["max_completion_tokens"]})["max_tokens"]
            params["max_tokens"] = min(limit, params.get("max_tokens", limit))
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise InvalidRequest('"stream" must be true or false.')
        options = body.get("stream_options") or {}
        if not isinstance(options, dict) or any(key != "include_usage" for key in options):
            raise InvalidRequest('"stream_options" may hold only {"include_usage": true|false}.')
        return ChatRequest(parse_turns(messages), model, params), stream, bool(options.get("include_usage"))


class Completion:
    """One completion's chunks (called with each batch, as a stream's framing) or its whole object (`collect`)."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.first = self._chunk({"role": "assistant", "content": ""})

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._event({"choices": [choice]})

    def _event(self, fields: dict[str, Any]) -> bytes:
        base = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        return encode_json_event({**base, **fields})

    def __call__(self, batch: Batch) -> bytes:
        out = [self.first]
        self.first = b""
        for event in batch.events:
            if isinstance(event, Content):
                out.append(self._chunk({"content": event.text}))
            elif isinstance(event, Reasoning):  # the field vLLM, Ollama and DeepSeek use, which their clients read
                out.append(self._chunk({"reasoning_content": event.text}))
            elif isinstance(event, Done):
                out.append(self._chunk({}, event.finish_reason))
                if self.include_usage and event.usage is not None:
                    out.append(self._event({"choices": [], "usage": event.usage}))
                out.append(DATA_DONE)
            elif isinstance(event, Failed):
                out.append(encode_json_event(openai_error(event)))
        return b"".join(out)

    async def collect(self, events: AsyncIterator[Batch]) -> tuple[dict[str, Any], int]:
        """The whole `chat.completion`, or OpenAI's error shape and status if the reply broke off."""
        text: list[str] = []
        thoughts: list[str] = []
        async for batch in events:
            for event in batch.events:
                if isinstance(event, Content):
                    text.append(event.text)
                elif isinstance(event, Reasoning):
                    thoughts.append(event.text)
                elif isinstance(event, Failed):
                    status = {"upstream_timeout": 504, "server_shutdown": 503}.get(event.code, 502)
                    return openai_error(event), status
                elif isinstance(event, Done):
                    return self._completion("".join(text), "".join(thoughts), event), 200
        return openai_error(Failed("upstream_disconnected", "The reply ended early.")), 502

    def _completion(self, text: str, thoughts: str, done: Done) -> dict[str, Any]:
        message = {"role": "assistant", "content": text, "refusal": None}
        if thoughts:
            message["reasoning_content"] = thoughts
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": done.finish_reason}
        result = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if done.usage is not None:
            result["usage"] = done.usage
        return result


def openai_error(failed: Failed) -> dict[str, Any]:
    """A failed reply in OpenAI's error shape (after the response started, always a server error)."""
    return {"error": {"message": failed.message, "type": "server_error", "param": None, **failed.payload()["error"]}}
