"""A reply as the Responses API streams it: typed events in, `event:`/`data:` Responses events out, each with its
`sequence_number`; or one Response object assembled from them (`collect`).

Over a chat upstream the stream is synthesized: `response.created`, `response.in_progress`, an output item per
message, reasoning summary and function call (`output_item.added` ... `.done`, with their content parts and
deltas), then `response.completed`, `response.incomplete` or `response.failed`. Over an upstream speaking Responses
the upstream's own events arrive as `Passthrough` and go out unchanged; only an end the upstream never sent (a
broken connection, a shutdown) is written here, as `response.failed`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from chatsse.events import Annotation, Batch, Content, Done, Event, Failed, Passthrough, Reasoning, Refusal, ToolCall
from chatsse.responses.objects import (
    TEXT_DELTA,
    OutputItem,
    frame,
    new_id,
    note_filters,
    response_in,
    response_object,
    usage_of,
)
from chatsse.sse import encode_json

TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")
FAILED_STATUS = {"upstream_timeout": 504, "server_shutdown": 503}
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter", "stopped": "stopped"}


class ResponseStream:
    """One response's events: called with each batch (a stream's framing), or `collect()` for the whole object."""

    def __init__(self, model: str, body: dict[str, Any]) -> None:
        self.id = new_id("resp_")
        self.created_at = int(time.time())
        self.model = model
        self.body = body
        self.sequence = 0
        self.started = False
        self.passthrough = False  # the upstream speaks Responses: its events go out as they came
        self.ended = False  # a terminal event went out
        self.items: list[OutputItem] = []
        self.message: OutputItem | None = None
        self.reasoning: OutputItem | None = None
        self.calls: dict[int, OutputItem] = {}
        self.final: dict[str, Any] | None = None  # the response of the terminal event
        self.failure: Failed | None = None
        self.text_at = b""  # while a text part is open: its item_id, output_index and content_index, as JSON
        self.open_text: list[str] = []  # and its text so far
        self.filters: dict[str, dict[str, Any]] = {}  # Azure's filter results, as its Responses API names them

    def __call__(self, batch: Batch) -> bytes:
        out: list[bytes] = []
        for event in batch.events:
            if isinstance(event, Content):  # almost every event: checked first
                if event.text or event.logprobs:
                    out.append(self._text(event))
            elif isinstance(event, Passthrough):
                out.append(b"event: " + event.kind.encode() + b"\ndata: " + event.data.encode() + b"\n\n")
                self.sequence += 1  # an end written here (a stop, a cut) goes on from the upstream's numbers
                if not self.passthrough:
                    self.passthrough = self.started = True
                    self._take_id(event)
                if self.final is None and (event.kind in TERMINAL or self.body.get("background")):
                    self._keep_final(event)  # the Response: as it ended, or a background one as accepted
                self.ended = self.ended or event.kind in TERMINAL
            else:
                out.append(self._other(event))
        return b"".join(out)

    def _emit(self, kind: str, fields: dict[str, Any]) -> bytes:
        self.sequence += 1
        return frame(kind, {"sequence_number": self.sequence - 1, **fields})

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        created = self._emit("response.created", {"response": self.response("in_progress")})
        return created + self._emit("response.in_progress", {"response": self.response("in_progress")})

    def _other(self, event: Event) -> bytes:
        if isinstance(event, Done):
            if self.ended:
                return b""  # the upstream's own terminal event went out
            return self._start() + self._end(event)
        if isinstance(event, Failed):
            self.failure = event
            if self.ended:
                return b""
            self.ended = True
            response = self.response("failed", error={"code": event.code, "message": event.message})
            return self._start() + self._emit("response.failed", {"response": response})
        if isinstance(event, Refusal):
            return self._refusal(event) if event.text else b""
        if isinstance(event, Reasoning):
            return self._reasoning(event)
        if isinstance(event, ToolCall):
            return self._call(event)
        if isinstance(event, Annotation):
            note_filters(self.filters, event)
        return b""  # a Finish: one choice only, and Done carries the same reason

    def _open(self, item: dict[str, Any]) -> tuple[OutputItem, bytes]:
        opened = OutputItem(len(self.items), item)
        self.items.append(opened)
        added = self._emit("response.output_item.added", {"output_index": opened.index, "item": dict(item)})
        return opened, added

    def _message_part(self, kind: str) -> tuple[OutputItem, int, bytes]:
        """The open message and the index of its open part of `kind` (output_text or refusal), opened as needed."""
        out = b""
        if self.message is None:
            out += self._close_reasoning()
            item = {
                "id": new_id("msg_"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self.message, added = self._open(item)
            out += added
        message = self.message
        if not message.parts or message.parts[-1]["type"] != kind:
            out += self._close_part(message)
            part = {"type": "output_text", "text": "", "annotations": []} if kind == "output_text" else {}
            part = part or {"type": "refusal", "refusal": ""}
            message.parts.append(part)
            message.texts.append([])
            fields = self._at(message) | {"content_index": len(message.parts) - 1, "part": dict(part)}
            out += self._emit("response.content_part.added", fields)
        return message, len(message.parts) - 1, out

    def _at(self, item: OutputItem) -> dict[str, Any]:
        return {"item_id": item.item["id"], "output_index": item.index}

    def _text(self, event: Content) -> bytes:
        if self.text_at and event.logprobs is None:  # a text part is open: almost every event, written at once
            self.open_text.append(event.text)
            self.sequence += 1
            return TEXT_DELTA % (self.sequence - 1, self.text_at, encode_json(event.text))
        out = self._start()
        message, part, opened = self._message_part("output_text")
        message.texts[part].append(event.text)
        self.open_text = message.texts[part]
        self.text_at = encode_json(self._at(message) | {"content_index": part})[1:-1] + b","
        logprobs = (event.logprobs or {}).get("content") or []
        fields = self._at(message) | {"content_index": part, "delta": event.text, "logprobs": logprobs}
        return out + opened + self._emit("response.output_text.delta", fields)

    def _refusal(self, event: Refusal) -> bytes:
        out = self._start()
        message, part, opened = self._message_part("refusal")
        message.texts[part].append(event.text)
        fields = self._at(message) | {"content_index": part, "delta": event.text}
        return out + opened + self._emit("response.refusal.delta", fields)

    def _reasoning(self, event: Reasoning) -> bytes:
        out = self._start()
        if self.reasoning is None:
            self.reasoning, added = self._open({"id": new_id("rs_"), "type": "reasoning", "summary": []})
            self.reasoning.parts.append({"type": "summary_text", "text": ""})
            self.reasoning.texts.append([])
            fields = self._at(self.reasoning) | {"summary_index": 0, "part": {"type": "summary_text", "text": ""}}
            out += added + self._emit("response.reasoning_summary_part.added", fields)
        self.reasoning.texts[0].append(event.text)
        fields = self._at(self.reasoning) | {"summary_index": 0, "delta": event.text}
        return out + self._emit("response.reasoning_summary_text.delta", fields)

    def _call(self, event: ToolCall) -> bytes:
        out = self._start()
        call = self.calls.get(event.index)
        if call is None:
            out += self._close_reasoning() + self._close_message()
            item = {
                "id": new_id("fc_"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": event.id or new_id("call_"),
                "name": event.name or "",
                "arguments": "",
            }
            call, added = self._open(item)
            self.calls[event.index] = call
            out += added
        elif event.name:
            call.item["name"] += event.name
        if not event.arguments:
            return out
        call.arguments.append(event.arguments)
        return out + self._emit("response.function_call_arguments.delta", self._at(call) | {"delta": event.arguments})

    def _close_part(self, message: OutputItem) -> bytes:
        self.text_at = b""
        if not message.parts:
            return b""
        index, part = len(message.parts) - 1, message.parts[-1]
        if part.get("done"):
            return b""
        part["done"] = True
        text = "".join(message.texts[index])
        at = self._at(message) | {"content_index": index}
        if part["type"] == "output_text":
            whole = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            done = self._emit("response.output_text.done", at | {"text": text, "logprobs": []})
        else:
            whole = {"type": "refusal", "refusal": text}
            done = self._emit("response.refusal.done", at | {"refusal": text})
        message.parts[index] = whole | {"done": True}
        return done + self._emit("response.content_part.done", at | {"part": whole})

    def _close_message(self) -> bytes:
        message, self.message = self.message, None
        if message is None:
            return b""
        out = self._close_part(message)
        parts = [{k: v for k, v in part.items() if k != "done"} for part in message.parts]
        message.item = message.item | {"status": "completed", "content": parts}
        return out + self._emit("response.output_item.done", {"output_index": message.index, "item": message.item})

    def _close_reasoning(self) -> bytes:
        reasoning, self.reasoning = self.reasoning, None
        if reasoning is None:
            return b""
        text = "".join(reasoning.texts[0])
        at = self._at(reasoning) | {"summary_index": 0}
        part = {"type": "summary_text", "text": text}
        reasoning.item = reasoning.item | {"summary": [part]}
        return (
            self._emit("response.reasoning_summary_text.done", at | {"text": text})
            + self._emit("response.reasoning_summary_part.done", at | {"part": part})
            + self._emit("response.output_item.done", {"output_index": reasoning.index, "item": reasoning.item})
        )

    def _close_calls(self) -> bytes:
        out = []
        for call in self.calls.values():
            arguments = "".join(call.arguments)
            call.item = call.item | {"status": "completed", "arguments": arguments}
            fields = self._at(call) | {"name": call.item["name"], "arguments": arguments}
            out.append(self._emit("response.function_call_arguments.done", fields))
            out.append(self._emit("response.output_item.done", {"output_index": call.index, "item": call.item}))
        self.calls = {}
        return b"".join(out)

    def _end(self, done: Done) -> bytes:
        out = self._close_reasoning() + self._close_message() + self._close_calls()
        self.ended = True
        reason = INCOMPLETE.get(done.finish_reason)
        if reason is None:
            response = self.response("completed", usage=usage_of(done.usage))
            return out + self._emit("response.completed", {"response": response})
        details = {"reason": reason}
        response = self.response("incomplete", usage=usage_of(done.usage), incomplete_details=details)
        return out + self._emit("response.incomplete", {"response": response})

    def response(self, status: str, **fields: Any) -> dict[str, Any]:
        """The Response object as it stands."""
        output = [item.now() for item in self.items] if status != "in_progress" else []
        response = response_object(self.id, self.created_at, self.model, self.body, status, output) | fields
        if self.filters:
            response["content_filters"] = list(self.filters.values())
        if status != "in_progress":
            self.final = response
        return response

    def _take_id(self, event: Passthrough) -> None:
        """The upstream's response id (its first event is `response.created`), for an end written here."""
        response = response_in(event.data)
        if response is not None and isinstance(response.get("id"), str):
            self.id, self.model = response["id"], str(response.get("model") or self.model)

    def _keep_final(self, event: Passthrough) -> None:
        response = response_in(event.data)
        if response is not None:
            self.final = response

    async def collect(self, events: AsyncIterator[Batch]) -> tuple[dict[str, Any], int]:
        """The whole Response object (whatever its status; a background one as accepted, queued or in progress),
        or OpenAI's error shape and status if none came."""
        async for batch in events:
            self(batch)
            if self.ended or self.final is not None:
                break  # a background one goes on upstream: closing its stream does not cancel it
        if self.final is not None and (self.failure is None or self.passthrough):
            return self.final, 200
        failure = self.failure or Failed("upstream_disconnected", "The reply ended early.")
        error = {"message": failure.message, "type": "server_error", "param": None, **failure.payload()["error"]}
        return {"error": error}, FAILED_STATUS.get(failure.code, 502)
