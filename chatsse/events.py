"""A reply's events, typed: what the upstream reader hands the relay, and every face encodes in its own format.

    Content(text)                          a piece of the reply's text
    Reasoning(text)                        a piece of the model's thinking (where the model group relays it)
    Refusal(text)                          a piece of the model's refusal (OpenAI's `delta.refusal`)
    ToolCall(index, id, name, arguments)   a piece of a call the model asks the client to make: the first piece of a
                                           call names it (id and name), the rest carry its arguments' JSON text
    Finish(reason)                         one choice is complete (its own finish_reason)
    Annotation(results, choice, offsets)   Azure's content filter results: the prompt's (choice None) or a choice's
    Done(finish_reason, usage, filtered)   the reply is complete (`filtered`: the categories a content filter hit)
    Failed(code, message, ...)             the reply broke off; nothing follows
    Passthrough(kind, data)                an upstream's Responses API event as it came (`event:` name, `data:`
                                           text), for the /v1/responses face over an upstream speaking Responses

Text, reasoning, refusal, tool-call and finish events carry the `choice` they belong to (0 unless a request asked for
`n` > 1); text and refusals carry the upstream's `logprobs` for their tokens, when asked. Only the faces that relay
everything a reply can hold (OpenAI's and useChat's) get refusals, tool calls and finishes; the native face gets
text (`ChunkTranslator`'s plain mode).

A `Batch` is what one upstream read produced: the unit a face writes to its client at once. Each event's
`payload()` is chatsse's own wire format (`{"content": ...}`, `{"done": true, ...}`, ...), which the native face
sends and Redis keeps; `from_payload` reads it back. Events are made for every token, so they are plain slotted
classes (a frozen dataclass costs twice as much to make); nothing changes them once made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatsse.errors import ChatSSEError


def _placed(payload: dict[str, Any], choice: int, logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    """`payload` with the choice it belongs to and its logprobs, where they are not the defaults."""
    if choice:
        payload["choice"] = choice
    if logprobs is not None:
        payload["logprobs"] = logprobs
    return payload


@dataclass(slots=True)
class Content:
    text: str
    choice: int = 0
    logprobs: dict[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        if not self.choice and self.logprobs is None:
            return {"content": self.text}  # the native face's event, on every token: no more work than this
        return _placed({"content": self.text}, self.choice, self.logprobs)


@dataclass(slots=True)
class Reasoning:
    text: str
    choice: int = 0

    def payload(self) -> dict[str, Any]:
        return _placed({"reasoning": self.text}, self.choice)


@dataclass(slots=True)
class Refusal:
    text: str
    choice: int = 0
    logprobs: dict[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        return _placed({"refusal": self.text}, self.choice, self.logprobs)


@dataclass(slots=True)
class ToolCall:
    """A piece of tool call `index` of its choice. `id` and `name` come with the first piece of a call (None after);
    `arguments` is the next piece of its JSON text, possibly empty. Index -1 is the deprecated `function_call`."""

    index: int
    id: str | None
    name: str | None
    arguments: str
    choice: int = 0

    def payload(self) -> dict[str, Any]:
        call: dict[str, Any] = {"index": self.index, "arguments": self.arguments}
        if self.id is not None:
            call["id"] = self.id
        if self.name is not None:
            call["name"] = self.name
        return _placed({"tool_call": call}, self.choice)


@dataclass(slots=True)
class Finish:
    reason: str
    choice: int = 0

    def payload(self) -> dict[str, Any]:
        return _placed({"finish": self.reason}, self.choice)


@dataclass(slots=True)
class Annotation:
    """Azure's content filter results as it sent them: the prompt's `prompt_filter_results` (choice None), or a
    choice's `content_filter_results` with its `content_filter_offsets` (an asynchronous filter's)."""

    results: Any
    choice: int | None = None
    offsets: dict[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        if self.choice is None:
            return {"annotation": {"prompt_filter_results": self.results}}
        note: dict[str, Any] = {"content_filter_results": self.results, "choice": self.choice}
        if self.offsets is not None:
            note["content_filter_offsets"] = self.offsets
        return {"annotation": note}


@dataclass(slots=True)
class Done:
    finish_reason: str
    usage: dict[str, Any] | None = None
    filtered: list[str] | None = None  # with finish_reason content_filter: the categories filtered

    def payload(self) -> dict[str, Any]:
        done: dict[str, Any] = {"done": True, "finish_reason": self.finish_reason}
        if self.usage is not None:
            done["usage"] = self.usage
        if self.filtered is not None:
            done["filtered"] = self.filtered
        return done


@dataclass(slots=True)
class Failed:
    """The error as the client sees it: our code and message, and the id of the request that read the reply."""

    code: str
    message: str
    request_id: str | None = None

    @classmethod
    def of(cls, error: ChatSSEError) -> Failed:
        """`error` as a reply's last event; like every rendering of an error, this records it on the log line."""
        rendered = error.payload()["error"]
        return cls(error.code, error.message, rendered.get("request_id"))

    def payload(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.request_id is not None:
            error["request_id"] = self.request_id
        return {"error": error}


@dataclass(slots=True)
class Passthrough:
    """An upstream event relayed unchanged: no field of it is read or rewritten on the way."""

    kind: str
    data: str

    def payload(self) -> dict[str, Any]:
        return {"raw": self.kind, "data": self.data}


Event = Content | Reasoning | Refusal | ToolCall | Finish | Annotation | Done | Failed | Passthrough
ENDINGS = (Done, Failed)


@dataclass(slots=True)
class Batch:
    """The events of one upstream read, written to the client at once. In a kept reply `first_seq` numbers the
    first of them (the rest follow in order); 0 means they carry no sequence (not kept, or a follower's own error)."""

    events: list[Event]
    first_seq: int = 0


def from_payload(payload: dict[str, Any]) -> Event:
    """The event whose `payload()` this is (for events kept outside the process)."""
    choice = payload.get("choice", 0)
    if "content" in payload:
        return Content(payload["content"], choice, payload.get("logprobs"))
    if "reasoning" in payload:
        return Reasoning(payload["reasoning"], choice)
    if "refusal" in payload:
        return Refusal(payload["refusal"], choice, payload.get("logprobs"))
    if "tool_call" in payload:
        call = payload["tool_call"]
        return ToolCall(call["index"], call.get("id"), call.get("name"), call["arguments"], choice)
    if "finish" in payload:
        return Finish(payload["finish"], choice)
    if "raw" in payload:
        return Passthrough(payload["raw"], payload["data"])
    if "annotation" in payload:
        note = payload["annotation"]
        if "prompt_filter_results" in note:
            return Annotation(note["prompt_filter_results"])
        return Annotation(note["content_filter_results"], note.get("choice", 0), note.get("content_filter_offsets"))
    if "error" in payload:
        error = payload["error"]
        return Failed(error["code"], error["message"], error.get("request_id"))
    return Done(payload["finish_reason"], payload.get("usage"), payload.get("filtered"))
