"""A reply's events in OpenAI's shapes: `chat.completion.chunk` events as they come (a stream's framing), or one
`chat.completion` assembled from them. Every choice keeps its `index`; tool calls keep Azure's pieces (the first
names the call, the rest carry its arguments); refusals, logprobs and each choice's finish are relayed, and so are
Azure's content filter results where they say something: `prompt_filter_results` in a chunk of its own (as Azure
sends it), a choice's `content_filter_results` (and offsets) beside its delta, and both in the whole object."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from chatsse.events import (
    Annotation,
    Batch,
    Content,
    Done,
    Event,
    Failed,
    Finish,
    Passthrough,
    Reasoning,
    Refusal,
    ToolCall,
)
from chatsse.sse import DATA_DONE, encode_json_event

FAILED_STATUS = {"upstream_timeout": 504, "server_shutdown": 503}


def openai_error(failed: Failed) -> dict[str, Any]:
    """A failed reply in OpenAI's error shape (after the response started, always a server error)."""
    return {"error": {"message": failed.message, "type": "server_error", "param": None, **failed.payload()["error"]}}


def _tool_delta(call: ToolCall) -> dict[str, Any]:
    """A tool call's piece as Azure sends it: `id`, `type` and the name with the first, then arguments alone."""
    function: dict[str, Any] = {"arguments": call.arguments}
    if call.name is not None:
        function["name"] = call.name
    if call.index < 0:
        return {"function_call": function}
    piece: dict[str, Any] = {"index": call.index}
    if call.id is not None:
        piece |= {"id": call.id, "type": "function"}
    return {"tool_calls": [{**piece, "function": function}]}


class Completion:
    """One completion's chunks (called with each batch, as a stream's framing) or its whole object (`collect`)."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.first = True  # the role chunk is still to go out
        self.started = {0}  # the choices whose role chunk went out (the first's with the first batch)
        self.finished: set[int] = set()

    def _chunk(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        choice: int = 0,
        logprobs: dict[str, Any] | None = None,
    ) -> bytes:
        entry = {"index": choice, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return self._event({"choices": [entry]})

    def _event(self, fields: dict[str, Any]) -> bytes:
        base = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        return encode_json_event({**base, **fields})

    def __call__(self, batch: Batch) -> bytes:
        out = []
        if self.first:
            self.first = False
            # As OpenAI: content "" before text, null before a reply that opens with a tool call.
            opening = next((e for e in batch.events if not isinstance(e, Annotation)), None)
            calls = isinstance(opening, ToolCall)
            out.append(self._chunk({"role": "assistant", "content": None if calls else ""}))
        for event in batch.events:
            if isinstance(event, Content):  # almost every event: checked first
                if event.choice and event.choice not in self.started:
                    out.append(self._start(event.choice))
                out.append(self._chunk({"content": event.text}, None, event.choice, event.logprobs))
            elif isinstance(event, Done):
                if 0 not in self.finished:  # stopped, or ended without the choice's own finish
                    out.append(self._chunk({}, event.finish_reason))
                if self.include_usage and event.usage is not None:
                    out.append(self._event({"choices": [], "usage": event.usage}))
                out.append(DATA_DONE)
            elif isinstance(event, Failed):
                out.append(encode_json_event(openai_error(event)))
            elif isinstance(event, Annotation):
                out.append(self._annotation(event))
            elif not isinstance(event, Passthrough):  # Responses events as they came: the /v1/responses face's only
                if event.choice not in self.started:
                    out.append(self._start(event.choice))
                out.append(self._other(event))
        return b"".join(out)

    def _annotation(self, note: Annotation) -> bytes:
        if note.choice is None:
            return self._event({"choices": [], "prompt_filter_results": note.results})
        entry = {"index": note.choice, "delta": {}, "finish_reason": None, "content_filter_results": note.results}
        if note.offsets is not None:
            entry["content_filter_offsets"] = note.offsets
        return self._event({"choices": [entry]})

    def _start(self, choice: int) -> bytes:
        self.started.add(choice)
        return self._chunk({"role": "assistant", "content": ""}, None, choice)

    def _other(self, event: Reasoning | Refusal | ToolCall | Finish) -> bytes:
        if isinstance(event, Refusal):
            return self._chunk({"refusal": event.text}, None, event.choice, event.logprobs)
        if isinstance(event, ToolCall):
            return self._chunk(_tool_delta(event), None, event.choice)
        if isinstance(event, Finish):
            self.finished.add(event.choice)
            return self._chunk({}, event.reason, event.choice)
        # the field vLLM, Ollama and DeepSeek use, which their clients read
        return self._chunk({"reasoning_content": event.text}, None, event.choice)

    async def collect(self, events: AsyncIterator[Batch]) -> tuple[dict[str, Any], int]:
        """The whole `chat.completion`, or OpenAI's error shape and status if the reply broke off."""
        choices: dict[int, _Choice] = {}
        prompt: Any = None
        async for batch in events:
            for event in batch.events:
                if isinstance(event, Failed):
                    return openai_error(event), FAILED_STATUS.get(event.code, 502)
                if isinstance(event, Done):
                    return self._completion(choices, event, prompt), 200
                if isinstance(event, Passthrough):
                    continue
                index = event.choice
                if index is None:  # only the prompt's filter results have no choice
                    prompt = event.results if isinstance(event, Annotation) else None
                    continue
                choice = choices.get(index)
                if choice is None:
                    choice = choices[index] = _Choice(index)
                choice.add(event)
        return openai_error(Failed("upstream_disconnected", "The reply ended early.")), 502

    def _completion(self, choices: dict[int, _Choice], done: Done, prompt: Any) -> dict[str, Any]:
        first = choices.setdefault(0, _Choice(0))
        first.finish_reason = first.finish_reason or done.finish_reason
        result: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [choices[index].whole() for index in sorted(choices)],
        }
        if done.usage is not None:
            result["usage"] = done.usage
        if prompt is not None:
            result["prompt_filter_results"] = prompt
        return result


@dataclass
class _Choice:
    """One choice of a reply being assembled into its `message`."""

    index: int
    text: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    thoughts: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: dict[str, list[Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    filter_results: dict[str, Any] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        if isinstance(event, (Content, Refusal)):
            (self.text if isinstance(event, Content) else self.refusal).append(event.text)
            for kind, entries in (event.logprobs or {}).items():
                if isinstance(entries, list):
                    self.logprobs.setdefault(kind, []).extend(entries)
        elif isinstance(event, Reasoning):
            self.thoughts.append(event.text)
        elif isinstance(event, ToolCall):
            call = self.calls.setdefault(event.index, {"id": None, "name": "", "arguments": []})
            call["id"] = call["id"] or event.id
            call["name"] += event.name or ""
            call["arguments"].append(event.arguments)
        elif isinstance(event, Finish):
            self.finish_reason = event.reason
        elif isinstance(event, Annotation):
            self.filter_results.update(event.results)

    def whole(self) -> dict[str, Any]:
        calls = [(call, "".join(call["arguments"])) for index, call in sorted(self.calls.items()) if index >= 0]
        tool_calls = [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": arguments}}
            for call, arguments in calls
        ]
        message: dict[str, Any] = {"role": "assistant"}
        message["content"] = "".join(self.text) if self.text or not (tool_calls or self.refusal) else None
        message["refusal"] = "".join(self.refusal) if self.refusal else None
        if tool_calls:
            message["tool_calls"] = tool_calls
        legacy = self.calls.get(-1)
        if legacy is not None:
            message["function_call"] = {"name": legacy["name"], "arguments": "".join(legacy["arguments"])}
        if self.thoughts:
            message["reasoning_content"] = "".join(self.thoughts)
        logprobs = None
        if self.logprobs:
            logprobs = {"content": self.logprobs.get("content"), "refusal": self.logprobs.get("refusal")}
        whole = {"index": self.index, "message": message, "logprobs": logprobs, "finish_reason": self.finish_reason}
        if self.filter_results:
            whole["content_filter_results"] = self.filter_results
        return whole
