"""Turns decoded Azure chat-completion chunks into chatsse's typed events: content, reasoning, refusals, tool calls,
finishes, done, or a failure (pure, no I/O).

Azure rules this follows (see upstream-protocol.md): ignore unknown fields; a chunk with `choices: []` only carries
`usage` or `prompt_filter_results`; a choice may lack `delta`;
`delta.content` may be missing, "" or null; the last non-null `finish_reason` wins (a late asynchronous content
filter overrides `stop`); the stream must end with `[DONE]` after a finish_reason, anything else is a failure.

Two modes. Plain (the native face, text only): the first choice's text, a refusal relayed as text, and a tool call
ends the reply with `tool_calls_unsupported`, never silence. Rich (the OpenAI and useChat faces): every choice by
its index, refusals, logprobs, tool-call pieces as they come, and each choice's own finish.

Content filter results: the categories a filter hit (`"filtered": true`) in the first choice's results go on `Done`
in both modes (a cheap look at the raw text first: almost every chunk has none). Rich mode also relays the
prompt's results and every choice's that say something: a hit, or an asynchronous filter's annotation (it comes
with offsets, without a delta). The all-clear results Azure puts on each token's chunk are not repeated.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatsse.errors import (
    ChatSSEError,
    ToolCallsUnsupported,
    UpstreamDisconnected,
    UpstreamMalformed,
    UpstreamStreamError,
)
from chatsse.events import Annotation, Content, Done, Event, Finish, Reasoning, Refusal, ToolCall
from chatsse.sse import ServerSentEvent

TOOL_FINISHES = ("tool_calls", "function_call")


class ChunkTranslator:
    """Feed decoded upstream events in order; read `failure` after each feed."""

    def __init__(self, reasoning: bool = False, rich: bool = False) -> None:
        self.reasoning = reasoning  # relay `delta.reasoning_content` as {"reasoning": ...} events
        self.rich = rich
        self.finish_reason: str | None = None  # the first choice's
        self.usage: dict[str, Any] | None = None
        self.content_events = 0  # pieces of text, refusal or tool arguments relayed
        self.relayed_chars = 0  # content, reasoning, refusal and tool-call text passed on: what an estimate counts
        self.done = False
        self.failure: ChatSSEError | None = None
        self.response_id: str | None = None  # the upstream's id and model of the reply (for traces)
        self.response_model: str | None = None
        self.filtered: list[str] | None = None  # the first choice's categories a content filter hit
        self._flagged = False  # this chunk's text says "filtered":true somewhere

    @property
    def over(self) -> bool:
        return self.done or self.failure is not None

    def feed(self, events: list[ServerSentEvent]) -> list[Event]:
        """Our events for these upstream events (content and, at the end, done). Stops at a failure."""
        out: list[Event] = []
        for event in events:
            if self.over:
                break  # events after [DONE] or after a failure are ignored
            data = event.data
            if data == "[DONE]":
                self._finish(out)
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.failure = UpstreamMalformed()
                break
            if not isinstance(chunk, dict):
                self.failure = UpstreamMalformed()
                break
            if event.event == "error" or "error" in chunk:
                self.failure = UpstreamStreamError()
                break
            self._flagged = '"filtered":true' in data or '"filtered": true' in data
            self._chunk(chunk, out)
        return out

    def end_of_stream(self) -> None:
        """The upstream body ended: without [DONE] that is a truncated reply, never a success."""
        if not self.over:
            self.failure = UpstreamDisconnected()

    def _chunk(self, chunk: dict[str, Any], out: list[Event]) -> None:
        if self.response_id is None and chunk.get("id"):  # Azure's first chunk (the prompt filter's) has none
            self.response_id, self.response_model = str(chunk["id"]), str(chunk.get("model") or "") or None
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            prompt = chunk.get("prompt_filter_results")
            if self.rich and isinstance(prompt, list):
                out.append(Annotation(prompt))
            return
        if self.rich:
            for choice in choices:
                if not isinstance(choice, dict):
                    self.failure = UpstreamMalformed()
                    return
                self._rich_choice(choice, out)
            return
        choice = choices[0]  # the native face never asks for n > 1
        if not isinstance(choice, dict):
            self.failure = UpstreamMalformed()
            return
        if self._flagged:
            self._note_filtered(choice.get("content_filter_results"))
        delta = choice.get("delta")
        reason = choice.get("finish_reason")
        if isinstance(delta, dict):
            if self.reasoning:
                self._reasoning(delta, 0, out)
            content = delta.get("content")
            if len(delta) > 1 or not content:  # not a plain {"content": "..."} piece, the one of almost every chunk
                content = content or delta.get("refusal")
                if delta.get("tool_calls") or delta.get("function_call"):
                    self.failure = ToolCallsUnsupported()
                    return
            if content and isinstance(content, str):
                self.content_events += 1
                self.relayed_chars += len(content)
                out.append(Content(content))
        if isinstance(reason, str) and reason:
            if reason in TOOL_FINISHES:
                self.failure = ToolCallsUnsupported()
                return
            self.finish_reason = reason

    def _rich_choice(self, choice: dict[str, Any], out: list[Event]) -> None:
        index = choice.get("index", 0)
        if index.__class__ is not int or index < 0:  # bool is an int subclass, but not an index
            index = 0
        logprobs = choice.get("logprobs")
        if logprobs is not None and not isinstance(logprobs, dict):
            logprobs = None
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if self.reasoning:
                self._reasoning(delta, index, out)
            text = delta.get("content")
            if isinstance(text, str) and (text or logprobs is not None):
                self.content_events += bool(text)
                self.relayed_chars += len(text)
                out.append(Content(text, index, logprobs))
                logprobs = None  # they belong to this piece
            if len(delta) > 1 or text is None:  # not a plain {"content": "..."} piece, the one of almost every chunk
                self._rest_of_delta(delta, index, logprobs, out)
                logprobs = None
        if logprobs is not None:  # logprobs with no text of their own: still the client's
            out.append(Content("", index, logprobs))
        results = choice.get("content_filter_results")
        if results and isinstance(results, dict) and (self._flagged or delta is None):
            offsets = choice.get("content_filter_offsets")
            out.append(Annotation(results, index, offsets if isinstance(offsets, dict) else None))
            if index == 0 and self._flagged:
                self._note_filtered(results)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            out.append(Finish(reason, index))
            if index == 0:
                self.finish_reason = reason

    def _rest_of_delta(
        self, delta: dict[str, Any], index: int, logprobs: dict[str, Any] | None, out: list[Event]
    ) -> None:
        """A delta's refusal and tool-call pieces (and a refusal's logprobs)."""
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and (refusal or logprobs is not None):
            self.content_events += bool(refusal)
            self.relayed_chars += len(refusal)
            out.append(Refusal(refusal, index, logprobs))
        elif logprobs is not None:
            out.append(Content("", index, logprobs))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                self._tool_call(call, index, out)
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            self._tool_call({"index": -1, "function": legacy}, index, out)

    def _tool_call(self, call: Any, choice: int, out: list[Event]) -> None:
        if not isinstance(call, dict):
            self.failure = UpstreamMalformed()
            return
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        index, call_id, name = call.get("index", 0), call.get("id"), function.get("name")
        arguments = function.get("arguments")
        if not isinstance(index, int) or isinstance(index, bool):
            self.failure = UpstreamMalformed()
            return
        arguments = arguments if isinstance(arguments, str) else ""
        self.content_events += bool(arguments)
        self.relayed_chars += len(arguments) + (len(name) if isinstance(name, str) else 0)
        out.append(
            ToolCall(
                index,
                call_id if isinstance(call_id, str) else None,
                name if isinstance(name, str) else None,
                arguments,
                choice,
            )
        )

    def _reasoning(self, delta: dict[str, Any], choice: int, out: list[Event]) -> None:
        # OpenAI-compatible servers (vLLM, Ollama, DeepSeek) stream a model's thinking in reasoning_content.
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        if thought and isinstance(thought, str):
            self.relayed_chars += len(thought)
            out.append(Reasoning(thought, choice))

    def _note_filtered(self, results: Any) -> None:
        if isinstance(results, dict):
            hit = [name for name, result in results.items() if isinstance(result, dict) and result.get("filtered")]
            if hit:
                self.filtered = sorted({*(self.filtered or ()), *hit})

    def _finish(self, out: list[Event]) -> None:
        if self.finish_reason is None:
            self.failure = UpstreamDisconnected(
                "Azure OpenAI ended the stream without saying why it stopped; the reply may be incomplete."
            )
            return
        self.done = True
        filtered = self.filtered if self.finish_reason == "content_filter" else None
        out.append(Done(self.finish_reason, self.usage, filtered))
