"""An upstream's Responses API events as chatsse's typed events (pure, no I/O): what every face reads from an
upstream speaking Responses.

For the /v1/responses face (`passthrough`) every event goes on unchanged as a `Passthrough`, including types chatsse
does not know; it reads only what it needs: the response's id, usage, errors, and the text for an estimate. For
the other faces: output text, refusals, reasoning summaries (where the upstream relays reasoning) and function
calls become `Content`, `Refusal`, `Reasoning` and `ToolCall`; built-in tools' events are not theirs to show.

Either way, the events before the first delta (created, in progress, an item or part added) are held back until
one comes, so a failure before it is still an HTTP error and fails over, as with chat completions. A stream ends
with `response.completed` or `response.incomplete` (done), `response.failed` or `error` (a failure); a body that
ends before either is a truncated reply.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatsse.chunks import ChunkTranslator
from chatsse.errors import ContentFiltered, ToolCallsUnsupported, UpstreamMalformed, UpstreamStreamError
from chatsse.events import Content, Done, Event, Passthrough, Reasoning, Refusal, ToolCall
from chatsse.sse import ServerSentEvent

# Said before any output: held back until the first delta, so that a failure before it can still fail over.
LIFECYCLE = frozenset(
    (
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_summary_part.added",
    )
)
ENDS = {"max_output_tokens": "length", "content_filter": "content_filter"}


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """The Responses API's usage in chat completions' shape, which the relay charges and every face reads."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": usage.get("total_tokens") or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


class ResponsesTranslator(ChunkTranslator):
    """Feed decoded upstream events in order; read `failure` after each feed (the chat translator's outcome fields:
    usage in chat's shape, the finish reason, the text counted)."""

    def __init__(self, reasoning: bool = False, rich: bool = False, passthrough: bool = False) -> None:
        super().__init__(reasoning, rich)
        self.passthrough = passthrough
        self._held: list[Event] = []  # events before the first delta
        self._started = False  # a delta came: nothing is held any more
        self._calls: dict[str, int] = {}  # a function call's item id: its index among the reply's calls

    def feed(self, events: list[ServerSentEvent]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if self.over:
                break
            data = event.data
            if data == "[DONE]":
                continue  # some OpenAI-compatible servers end a Responses stream as they end a chat one
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.failure = UpstreamMalformed()
                break
            if not isinstance(payload, dict):
                self.failure = UpstreamMalformed()
                break
            kind = payload.get("type")
            kind = kind if isinstance(kind, str) else event.event
            if self.passthrough:
                self._pass(Passthrough(kind, data), kind, out)
            self._read(kind, payload, out)
        if self.failure is not None and not self._started:
            return []  # before the first delta: an HTTP error, and the held events are never seen
        return out

    def _pass(self, event: Passthrough, kind: str, out: list[Event]) -> None:
        if not self._started and kind in LIFECYCLE:
            self._held.append(event)
            return
        self._release(out)
        out.append(event)

    def _release(self, out: list[Event]) -> None:
        if not self._started:
            self._started = True
            out.extend(self._held)
            self._held = []

    def _emit(self, event: Event, out: list[Event]) -> None:
        if self.passthrough:
            return  # the upstream's own event carries it
        self._release(out)
        out.append(event)

    def _read(self, kind: str, payload: dict[str, Any], out: list[Event]) -> None:
        if kind == "response.output_text.delta":
            self._text(payload.get("delta"), out, payload.get("logprobs"))
        elif kind == "response.function_call_arguments.delta":
            index = self._calls.get(str(payload.get("item_id")))
            delta = payload.get("delta")
            if index is not None and isinstance(delta, str):
                self.content_events += bool(delta)
                self.relayed_chars += len(delta)
                self._emit(ToolCall(index, None, None, delta), out)
        elif kind == "response.refusal.delta":
            delta = payload.get("delta")
            if isinstance(delta, str) and delta:
                if not self.rich:
                    self._text(delta, out)  # the native face relays a refusal as its text
                    return
                self.content_events += 1
                self.relayed_chars += len(delta)
                self._emit(Refusal(delta), out)
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            delta = payload.get("delta")
            if isinstance(delta, str) and delta:
                self.relayed_chars += len(delta)
                if self.reasoning:
                    self._emit(Reasoning(delta), out)
        elif kind == "response.output_item.added":
            self._item(payload.get("item"), out)
        elif kind in ("response.created", "response.in_progress", "response.queued"):
            response = payload.get("response")
            if isinstance(response, dict) and self.response_id is None and isinstance(response.get("id"), str):
                self.response_id = response["id"]
                self.response_model = str(response.get("model") or "") or None
        elif kind in ("response.completed", "response.incomplete"):
            self._end(payload.get("response"), out)
        elif kind in ("response.failed", "error"):
            self._failed(payload)

    def _text(self, delta: Any, out: list[Event], logprobs: Any = None) -> None:
        if not isinstance(delta, str) or not delta:
            return
        self.content_events += 1
        self.relayed_chars += len(delta)
        if self.rich and logprobs:
            self._emit(Content(delta, 0, {"content": logprobs}), out)
        else:
            self._emit(Content(delta), out)

    def _item(self, item: Any, out: list[Event]) -> None:
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return
        if not self.rich and not self.passthrough:
            self.failure = ToolCallsUnsupported()
            return
        index = len(self._calls)
        self._calls[str(item.get("id"))] = index
        name, call_id = item.get("name"), item.get("call_id")
        arguments = item.get("arguments") if isinstance(item.get("arguments"), str) else ""
        self.relayed_chars += len(name) if isinstance(name, str) else 0
        call = ToolCall(
            index, call_id if isinstance(call_id, str) else None, name if isinstance(name, str) else None, ""
        )
        self._emit(call, out)
        if arguments:
            self._emit(ToolCall(index, None, None, arguments), out)

    def _end(self, response: Any, out: list[Event]) -> None:
        response = response if isinstance(response, dict) else {}
        self.usage = chat_usage(response.get("usage"))
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        if response.get("status") == "incomplete" or reason:
            self.finish_reason = ENDS.get(str(reason), "length")
        else:
            self.finish_reason = "tool_calls" if self._calls else "stop"
        self.done = True
        self._release(out)
        out.append(Done(self.finish_reason, self.usage))

    def _failed(self, payload: dict[str, Any]) -> None:
        response = payload.get("response")
        error = response.get("error") if isinstance(response, dict) else payload.get("error", payload)
        code = error.get("code") if isinstance(error, dict) else None
        self.failure = ContentFiltered() if code == "content_filter" else UpstreamStreamError()
