"""The AI SDK's UI message stream (what `useChat` speaks): `POST /api/v1/chat/ui` and its resume route.

Chunk shapes follow the `ai` package's own schema (`uiMessageChunkSchema` in ai 6): start, start-step, (where the
model group relays reasoning: reasoning-start, reasoning-delta..., reasoning-end), text-start, text-delta...,
text-end, finish-step, finish (finishReason; our finish reason and usage as message metadata), then
`data: [DONE]`; a failure after the start is an `error` chunk with `errorText`.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from chatsse.errors import InvalidRequest
from chatsse.events import Batch, Content, Done, Failed, Reasoning
from chatsse.relay import ChatRelay
from chatsse.schema import ChatRequest, load_json, parse_model, parse_params, parse_turns
from chatsse.server.body import read_json_body
from chatsse.server.response import STREAM_HEADERS, RelayResponse
from chatsse.sse import DATA_DONE, encode_json_event

HEADERS = {**STREAM_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
SKIPPED_PARTS = ("step-start", "reasoning")  # an earlier reply's steps and thoughts: not part of the conversation
FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content-filter", "tool_calls": "tool-calls"}
_chunk = encode_json_event  # every UI message chunk is one `data:` event


class UIStreamFace:
    """What `DefaultChatTransport` sends and expects: `{id, messages: UIMessage[], trigger, messageId}`."""

    def __init__(self, relay: ChatRelay) -> None:
        self.relay = relay
        self.settings = relay.settings

    async def chat(self, request: Request) -> Response:
        body = load_json(await read_json_body(request, self.settings.max_body_bytes, self.settings.body_timeout))
        chat, chat_id, message_id = self._parse(body)
        opened = await self.relay.open(chat, chat_id=chat_id)
        frame = UIFrames(message_id or _message_id(opened.stream_id))
        headers = {**HEADERS, **opened.headers}
        return RelayResponse(opened.events, frame, headers, self.settings.ping_seconds, opened.background)

    async def resume(self, request: Request) -> Response:
        """`GET /api/v1/chat/ui/{chat_id}/stream`: the chat's reply still being produced, from its start (useChat
        replays it); 204 when there is none."""
        stream_id = await self.relay.stream_of_chat(request.path_params["chat_id"])
        if stream_id is None:
            return Response(status_code=204)
        events = await self.relay.follow(stream_id, 0)
        headers = {**HEADERS, "X-Chatsse-Stream": stream_id}
        return RelayResponse(events, UIFrames(_message_id(stream_id)), headers, self.settings.ping_seconds)

    async def stop(self, request: Request) -> Response:
        """`DELETE /api/v1/chat/ui/{chat_id}/stream`: end the chat's reply now (204 whether or not one was open)."""
        stream_id = await self.relay.stream_of_chat(request.path_params["chat_id"])
        if stream_id is not None:
            await self.relay.stop(stream_id)
        return Response(status_code=204)

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


class UIFrames:
    """Our events as UI message stream chunks: reasoning (where the model group relays it), then text."""

    def __init__(self, message_id: str) -> None:
        self.head = _chunk({"type": "start", "messageId": message_id}) + _chunk({"type": "start-step"})
        self.open: str | None = None  # the part of the message now open (reasoning-1 or text-1)

    def __call__(self, batch: Batch) -> bytes:
        out = [self.head]
        self.head = b""
        for event in batch.events:
            if isinstance(event, Content):
                out.append(self._switch("text"))
                out.append(_chunk({"type": "text-delta", "id": "text-1", "delta": event.text}))
            elif isinstance(event, Reasoning):
                out.append(self._switch("reasoning"))
                out.append(_chunk({"type": "reasoning-delta", "id": "reasoning-1", "delta": event.text}))
            elif isinstance(event, Done):
                metadata: dict[str, Any] = {"finishReason": event.finish_reason}
                if event.usage is not None:
                    metadata["usage"] = event.usage
                out.append(self._switch(None) + _chunk({"type": "finish-step"}))
                finish = {"type": "finish", "finishReason": FINISH_REASONS.get(event.finish_reason, "other")}
                out.append(_chunk({**finish, "messageMetadata": metadata}) + DATA_DONE)
            elif isinstance(event, Failed):
                out.append(_chunk({"type": "error", "errorText": f"{event.message} ({event.code})"}) + DATA_DONE)
        return b"".join(out)

    def _switch(self, kind: str | None) -> bytes:
        """End the open part and start `kind` (None: just end it); nothing when `kind` is already open."""
        if kind == self.open:
            return b""
        out = b""
        if self.open is not None:
            out += _chunk({"type": f"{self.open}-end", "id": f"{self.open}-1"})
        if kind is not None:
            out += _chunk({"type": f"{kind}-start", "id": f"{kind}-1"})
        self.open = kind
        return out
