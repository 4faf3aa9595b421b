"""The AI SDK's UI message stream (what `useChat` speaks): `POST /api/v1/chat/ui` and its resume route.

Chunk shapes follow the `ai` package's own schema (`uiMessageChunkSchema` in ai 6): start, start-step, (where the
model group relays reasoning: reasoning-start, reasoning-delta..., reasoning-end), text-start, text-delta...,
text-end, finish-step, finish (finishReason; our finish reason and usage as message metadata), then
`data: [DONE]`; a failure after the start is an `error` chunk with `errorText`.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from chatsse.errors import InvalidRequest
from chatsse.faces import payloads
from chatsse.relay import STREAM_HEADERS, ChatRelay
from chatsse.schema import ChatRequest, load_json, parse_model, parse_params, parse_turns

HEADERS = {**STREAM_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
SKIPPED_PARTS = ("step-start", "reasoning")  # an earlier reply's steps and thoughts: not part of the conversation
FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content-filter", "tool_calls": "tool-calls"}
DONE = b"data: [DONE]\n\n"


class UIStreamFace:
    """What `DefaultChatTransport` sends and expects: `{id, messages: UIMessage[], trigger, messageId}`."""

    def __init__(self, relay: ChatRelay) -> None:
        self.relay = relay

    async def chat(self, request: Request) -> Response:
        body = load_json(await self.relay.read_json_body(request))
        chat, chat_id, message_id = self._parse(body)
        opened = await self.relay.open(chat, chat_id=chat_id)
        stream_id = opened.headers.get("X-Chatsse-Stream")
        message_id = message_id or _message_id(stream_id)
        return self.relay.sse_response(
            encode(opened.events, message_id), {**HEADERS, **opened.headers}, opened.background
        )

    async def resume(self, request: Request) -> Response:
        """`GET /api/v1/chat/ui/{chat_id}/stream`: the chat's reply still being produced, from its start (useChat
        replays it); 204 when there is none."""
        keeper = self.relay.keeper
        chat_id = request.path_params["chat_id"]
        owner = self.relay.owner()
        stream_id = await keeper.active_stream_of_chat(chat_id, owner) if keeper is not None else None
        if keeper is None or stream_id is None:
            return Response(status_code=204)
        events = await keeper.follow(stream_id, owner, 0)
        return self.relay.sse_response(
            encode(events, _message_id(stream_id)), {**HEADERS, "X-Chatsse-Stream": stream_id}
        )

    def _parse(self, body: Any) -> tuple[ChatRequest, str | None, str | None]:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise InvalidRequest('Send what useChat sends: {"id": ..., "messages": [UIMessage, ...]}.')
        turns = []
        for index, message in enumerate(body["messages"]):
            where = f'"messages"[{index}]'
            if not isinstance(message, dict) or not isinstance(message.get("parts"), list):
                raise InvalidRequest(f"{where} must be a UIMessage with a list of parts.")
            texts = []
            for number, part in enumerate(message["parts"]):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif kind not in SKIPPED_PARTS:
                    named = f'"{kind[:40]}"' if isinstance(kind, str) else "without a type"
                    raise InvalidRequest(f"{where}.parts[{number}] is a part {named}; chatsse relays only text parts.")
            if texts or message.get("role") == "user":
                turns.append({"role": message.get("role"), "content": "".join(texts)})
        chat_id, message_id = body.get("id"), body.get("messageId")
        ids_ok = all(v is None or (isinstance(v, str) and 0 < len(v) <= 200) for v in (chat_id, message_id))
        if not ids_ok:
            raise InvalidRequest('"id" and "messageId" must be strings of at most 200 characters.')
        chat = ChatRequest(parse_turns(turns), parse_model(body.get("model"), self.relay.models), parse_params(body))
        return chat, chat_id, message_id


def _message_id(stream_id: str | None) -> str:
    # Derived from the stream, so a resumed (replayed) reply has the same id as the first time.
    return f"msg-{stream_id[:24]}" if stream_id else f"msg-{secrets.token_hex(12)}"


def _chunk(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def encode(events: AsyncIterator[bytes], message_id: str) -> AsyncIterator[bytes]:
    """Our events as UI message stream chunks: reasoning (where the model group relays it), then text."""
    parts = _Parts()
    head = _chunk({"type": "start", "messageId": message_id}) + _chunk({"type": "start-step"})
    async for batch in payloads(events):
        out = [head]
        head = b""
        for payload in batch:
            if "reasoning" in payload:
                out.append(parts.switch("reasoning"))
                out.append(_chunk({"type": "reasoning-delta", "id": "reasoning-1", "delta": payload["reasoning"]}))
            elif "content" in payload:
                out.append(parts.switch("text"))
                out.append(_chunk({"type": "text-delta", "id": "text-1", "delta": payload["content"]}))
            elif payload.get("done"):
                reason = str(payload.get("finish_reason"))
                metadata = {"finishReason": reason, **({"usage": payload["usage"]} if "usage" in payload else {})}
                out.append(parts.switch(None) + _chunk({"type": "finish-step"}))
                finish = {"type": "finish", "finishReason": FINISH_REASONS.get(reason, "other")}
                out.append(_chunk({**finish, "messageMetadata": metadata}) + DONE)
            elif "error" in payload:
                error = payload["error"]
                out.append(_chunk({"type": "error", "errorText": f"{error['message']} ({error['code']})"}) + DONE)
        yield b"".join(out)


class _Parts:
    """Which part of the message is open (reasoning-1 or text-1): a part ends before the next one starts."""

    def __init__(self) -> None:
        self.open: str | None = None

    def switch(self, kind: str | None) -> bytes:
        if kind == self.open:
            return b""
        out = b""
        if self.open is not None:
            out += _chunk({"type": f"{self.open}-end", "id": f"{self.open}-1"})
        if kind is not None:
            out += _chunk({"type": f"{kind}-start", "id": f"{kind}-1"})
        self.open = kind
        return out
