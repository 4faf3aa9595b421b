"""The AI SDK's UI message stream (what `useChat` speaks): `POST /api/v1/chat/ui` and its resume route.

Chunk shapes follow the `ai` package's own schema (`uiMessageChunkSchema` in ai 6): start, start-step, (where the
model group relays reasoning: reasoning-start, reasoning-delta..., reasoning-end), text-start, text-delta...,
text-end, then for each tool call the model makes (a client-side tool: the request's `tools`, answered by the app's
`onToolCall` and `addToolOutput`) tool-input-start, tool-input-delta... and, once the step ends,
tool-input-available with the parsed input; then finish-step, finish (finishReason; our finish reason and usage as
message metadata), then `data: [DONE]`; a failure after the start is an `error` chunk with `errorText`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from chatsse.completion_request import check_field
from chatsse.errors import InvalidRequest
from chatsse.events import Batch, Content, Done, Failed, Reasoning, Refusal, ToolCall
from chatsse.faces.ui_messages import chat_messages
from chatsse.relay import ChatRelay
from chatsse.schema import ChatRequest, load_json, parse_model, parse_params
from chatsse.server.body import read_media_body
from chatsse.server.response import STREAM_HEADERS, RelayResponse
from chatsse.sse import DATA_DONE, encode_json_event

HEADERS = {**STREAM_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
TEXTS = (Content, Refusal)
TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")  # in the request's body (the transport's `body`)
FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content-filter", "tool_calls": "tool-calls"}
_chunk = encode_json_event  # every UI message chunk is one `data:` event


class UIStreamFace:
    """What `DefaultChatTransport` sends and expects: `{id, messages: UIMessage[], trigger, messageId}`."""

    def __init__(self, relay: ChatRelay) -> None:
        self.relay = relay
        self.settings = relay.settings

    async def chat(self, request: Request) -> Response:
        settings = self.settings
        body = load_json(await read_media_body(request, settings))
        chat, chat_id, message_id = self._parse(body)
        opened = await self.relay.open(chat, request.receive, chat_id=chat_id)
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
        if not isinstance(body, dict):
            raise InvalidRequest('Send what useChat sends: {"id": ..., "messages": [UIMessage, ...]}.')
        turns = chat_messages(body.get("messages"))
        chat_id, message_id = body.get("id"), body.get("messageId")
        ids_ok = all(v is None or (isinstance(v, str) and 0 < len(v) <= 200) for v in (chat_id, message_id))
        if not ids_ok:
            raise InvalidRequest('"id" and "messageId" must be strings of at most 200 characters.')
        params = parse_params(body)
        for name in TOOL_FIELDS:
            if body.get(name) is not None:
                check_field(name, body[name])
                params[name] = body[name]
        chat = ChatRequest(turns, parse_model(body.get("model"), self.relay.models), params, rich=True)
        return chat, chat_id, message_id


def _message_id(stream_id: str | None) -> str:
    # Derived from the stream, so a resumed (replayed) reply has the same id as the first time.
    return f"msg-{stream_id[:24]}" if stream_id else f"msg-{secrets.token_hex(12)}"


@dataclass
class _Call:
    """A tool call being streamed: what tool-input-available needs once it is whole."""

    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class UIFrames:
    """Our events as UI message stream chunks: reasoning (where the model group relays it), text, tool calls."""

    def __init__(self, message_id: str) -> None:
        self.head = _chunk({"type": "start", "messageId": message_id}) + _chunk({"type": "start-step"})
        self.message_id = message_id
        self.open: str | None = None  # the part of the message now open (reasoning-1 or text-1)
        self.calls: dict[int, _Call] = {}  # this step's tool calls, by their index

    def __call__(self, batch: Batch) -> bytes:
        out = [self.head]
        self.head = b""
        for event in batch.events:
            if isinstance(event, TEXTS):  # the AI SDK has no refusal part: a refusal reads as text
                if not event.choice and event.text:
                    out.append(self._switch("text"))
                    out.append(_chunk({"type": "text-delta", "id": "text-1", "delta": event.text}))
            elif isinstance(event, Reasoning):
                out.append(self._switch("reasoning"))
                out.append(_chunk({"type": "reasoning-delta", "id": "reasoning-1", "delta": event.text}))
            elif isinstance(event, ToolCall):
                out.append(self._tool_call(event))
            elif isinstance(event, Done):
                metadata: dict[str, Any] = {"finishReason": event.finish_reason}
                if event.usage is not None:
                    metadata["usage"] = event.usage
                out.append(self._switch(None) + self._calls_available())
                if event.filtered is not None:  # what Azure's content filter hit: a data part useChat keeps
                    metadata["filtered"] = event.filtered
                    out.append(_chunk({"type": "data-content-filter", "data": {"filtered": event.filtered}}))
                out.append(_chunk({"type": "finish-step"}))
                finish = {"type": "finish", "finishReason": FINISH_REASONS.get(event.finish_reason, "other")}
                out.append(_chunk({**finish, "messageMetadata": metadata}) + DATA_DONE)
            elif isinstance(event, Failed):
                out.append(_chunk({"type": "error", "errorText": f"{event.message} ({event.code})"}) + DATA_DONE)
        return b"".join(out)

    def _tool_call(self, event: ToolCall) -> bytes:
        if event.choice != 0 or event.index < 0:
            return b""
        out = b""
        call = self.calls.get(event.index)
        if call is None:
            call_id = event.id or f"{self.message_id}-call-{event.index}"
            call = self.calls[event.index] = _Call(call_id, event.name or "unknown")
            out += self._switch(None)
            out += _chunk({"type": "tool-input-start", "toolCallId": call.id, "toolName": call.name})
        if event.arguments:
            call.arguments.append(event.arguments)
            out += _chunk({"type": "tool-input-delta", "toolCallId": call.id, "inputTextDelta": event.arguments})
        return out

    def _calls_available(self) -> bytes:
        """Each tool call of the step, whole: its parsed input (tool-input-error if the model's JSON is broken)."""
        out = []
        for call in self.calls.values():
            text = "".join(call.arguments)
            named = {"toolCallId": call.id, "toolName": call.name}
            try:
                parsed = orjson.loads(text) if text.strip() else {}
            except orjson.JSONDecodeError:
                error = "The model's arguments for this tool are not valid JSON."
                out.append(_chunk({"type": "tool-input-error", **named, "input": text, "errorText": error}))
                continue
            out.append(_chunk({"type": "tool-input-available", **named, "input": parsed}))
        self.calls = {}
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
