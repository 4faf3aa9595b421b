"""A reply's events, typed: what the upstream reader hands the relay, and every face encodes in its own format.

    Content(text)                 a piece of the reply
    Reasoning(text)               a piece of the model's thinking (where the model group relays it)
    Done(finish_reason, usage)    the reply is complete
    Failed(code, message, ...)    the reply broke off; nothing follows

A `Batch` is what one upstream read produced: the unit a face writes to its client at once. Each event's
`payload()` is chatsse's own wire format (`{"content": ...}`, `{"done": true, ...}`, ...), which the native face
sends and Redis keeps; `from_payload` reads it back. Events are made for every token, so they are plain slotted
classes (a frozen dataclass costs twice as much to make); nothing changes them once made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatsse.errors import ChatSSEError


@dataclass(slots=True)
class Content:
    text: str

    def payload(self) -> dict[str, Any]:
        return {"content": self.text}


@dataclass(slots=True)
class Reasoning:
    text: str

    def payload(self) -> dict[str, Any]:
        return {"reasoning": self.text}


@dataclass(slots=True)
class Done:
    finish_reason: str
    usage: dict[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        done: dict[str, Any] = {"done": True, "finish_reason": self.finish_reason}
        if self.usage is not None:
            done["usage"] = self.usage
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


Event = Content | Reasoning | Done | Failed
ENDINGS = (Done, Failed)


@dataclass(slots=True)
class Batch:
    """The events of one upstream read, written to the client at once. In a kept reply `first_seq` numbers the
    first of them (the rest follow in order); 0 means they carry no sequence (not kept, or a follower's own error)."""

    events: list[Event]
    first_seq: int = 0


def from_payload(payload: dict[str, Any]) -> Event:
    """The event whose `payload()` this is (for events kept outside the process)."""
    if "content" in payload:
        return Content(payload["content"])
    if "reasoning" in payload:
        return Reasoning(payload["reasoning"])
    if "error" in payload:
        error = payload["error"]
        return Failed(error["code"], error["message"], error.get("request_id"))
    return Done(payload["finish_reason"], payload.get("usage"))
