"""OpenAI's chat completions on chatsse: `POST /v1/chat/completions` (streamed or not) and `GET /v1/models`."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatsse.errors import InvalidRequest, ModelNotFound
from chatsse.faces import payloads
from chatsse.relay import STREAM_HEADERS, ChatRelay
from chatsse.schema import ChatRequest, load_json, parse_params, parse_turns

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
DONE = b"data: [DONE]\n\n"


class OpenAIFace:
    """The routes an OpenAI SDK calls, with `base_url=<gateway>/v1` and a caller key as its api_key."""

    def __init__(self, relay: ChatRelay) -> None:
        self.relay = relay

    async def models(self, request: Request) -> Response:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "chatsse"} for name in self.relay.models]
        return JSONResponse({"object": "list", "data": data})

    async def completions(self, request: Request) -> Response:
        body = load_json(await self.relay.read_json_body(request))
        chat, stream, include_usage = self._parse(body)
        opened = await self.relay.open(chat)
        completion = Completion(chat.model, include_usage)
        if stream:
            events = completion.stream(opened.events)
            return self.relay.sse_response(events, {**STREAM_HEADERS, **opened.headers}, opened.background)
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
    """One completion's chunks (or whole object), encoded from our events."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._event({"choices": [choice]})

    def _event(self, fields: dict[str, Any]) -> bytes:
        base = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        return b"data: " + orjson.dumps({**base, **fields}) + b"\n\n"

    async def stream(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        first = self._chunk({"role": "assistant", "content": ""})
        async for batch in payloads(events):
            out = [first]
            first = b""
            for payload in batch:
                if "content" in payload:
                    out.append(self._chunk({"content": payload["content"]}))
                elif "reasoning" in payload:  # the field vLLM, Ollama and DeepSeek use, which their clients read
                    out.append(self._chunk({"reasoning_content": payload["reasoning"]}))
                elif payload.get("done"):
                    out.append(self._chunk({}, payload.get("finish_reason")))
                    if self.include_usage and "usage" in payload:
                        out.append(self._event({"choices": [], "usage": payload["usage"]}))
                    out.append(DONE)
                elif "error" in payload:
                    out.append(b"data: " + orjson.dumps(openai_error(payload["error"])) + b"\n\n")
            yield b"".join(out)

    async def collect(self, events: AsyncIterator[bytes]) -> tuple[dict[str, Any], int]:
        """The whole `chat.completion`, or OpenAI's error shape and status if the reply broke off."""
        text: list[str] = []
        thoughts: list[str] = []
        async for batch in payloads(events):
            for payload in batch:
                if "content" in payload:
                    text.append(payload["content"])
                elif "reasoning" in payload:
                    thoughts.append(payload["reasoning"])
                elif "error" in payload:
                    code = payload["error"].get("code")
                    status = {"upstream_timeout": 504, "server_shutdown": 503}.get(code, 502)
                    return openai_error(payload["error"]), status
                elif payload.get("done"):
                    message = {"role": "assistant", "content": "".join(text), "refusal": None}
                    if thoughts:
                        message["reasoning_content"] = "".join(thoughts)
                    choice = {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": payload["finish_reason"],
                    }
                    result = {
                        "id": self.id,
                        "object": "chat.completion",
                        "created": self.created,
                        "model": self.model,
                        "choices": [choice],
                    }
                    if "usage" in payload:
                        result["usage"] = payload["usage"]
                    return result, 200
        return openai_error({"code": "upstream_disconnected", "message": "The reply ended early."}), 502


def openai_error(error: dict[str, Any]) -> dict[str, Any]:
    """Our error event's object in OpenAI's shape (after the response started, always a server error)."""
    return {"error": {"message": error.get("message"), "type": "server_error", "param": None, **error}}
