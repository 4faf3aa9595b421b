"""Turns decoded Azure chat-completion chunks into chatsse's typed events: content, reasoning, done, or a failure
(pure, no I/O).

Azure rules this follows (see upstream-protocol.md): ignore unknown fields; a chunk with `choices: []`
only carries `usage` or `prompt_filter_results`; a choice may lack `delta`; `delta.content` may be
missing, "" or null; the last non-null `finish_reason` wins (a late asynchronous content filter
overrides `stop`); the stream must end with `[DONE]` after a finish_reason, anything else is a failure.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatsse.errors import ChatSSEError, UpstreamDisconnected, UpstreamMalformed, UpstreamStreamError
from chatsse.events import Content, Done, Event, Reasoning
from chatsse.sse import ServerSentEvent


class ChunkTranslator:
    """Feed decoded upstream events in order; read `failure` after each feed."""

    def __init__(self, reasoning: bool = False) -> None:
        self.reasoning = reasoning  # relay `delta.reasoning_content` as {"reasoning": ...} events
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.content_events = 0
        self.relayed_chars = 0  # content and reasoning text passed on: what an estimate of its tokens counts
        self.done = False
        self.failure: ChatSSEError | None = None

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
            self._chunk(chunk, out)
        return out

    def end_of_stream(self) -> None:
        """The upstream body ended: without [DONE] that is a truncated reply, never a success."""
        if not self.over:
            self.failure = UpstreamDisconnected()

    def _chunk(self, chunk: dict[str, Any], out: list[Event]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return
        choice = choices[0]  # we always ask for n=1
        if not isinstance(choice, dict):
            self.failure = UpstreamMalformed()
            return
        delta = choice.get("delta")
        if self.reasoning and isinstance(delta, dict):
            # OpenAI-compatible servers (vLLM, Ollama, DeepSeek) stream a model's thinking in reasoning_content.
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if thought and isinstance(thought, str):
                self.relayed_chars += len(thought)
                out.append(Reasoning(thought))
        if isinstance(delta, dict):
            content = delta.get("content") or delta.get("refusal")
            if content and isinstance(content, str):
                self.content_events += 1
                self.relayed_chars += len(content)
                out.append(Content(content))
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self.finish_reason = reason

    def _finish(self, out: list[Event]) -> None:
        if self.finish_reason is None:
            self.failure = UpstreamDisconnected(
                "Azure OpenAI ended the stream without saying why it stopped; the reply may be incomplete."
            )
            return
        self.done = True
        out.append(Done(self.finish_reason, self.usage))
