"""The AI SDK's UIMessages (what useChat sends) as OpenAI's messages: text, images as `image_url` parts, and each
client-side tool call with its result as an assistant `tool_calls` turn and a `tool` turn (pure, no I/O).

An assistant UIMessage holds its reply's steps (`step-start` parts): a step whose tool calls have results is an
assistant turn with `tool_calls`, then one `tool` turn per result, and the text of the next step follows. A call
with no result yet (still streaming, or awaiting approval) is left out: the upstream refuses a call without one.
A model's reasoning, sources and data parts stay on the page; they are not part of the conversation.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatsse.completion_request import MAX_MESSAGES
from chatsse.errors import InvalidRequest

SKIPPED_PARTS = ("step-start", "reasoning", "source-url", "source-document")
IMAGE_URLS = ("data:image/", "https://", "http://")
ROLES = ("user", "assistant", "system")


def chat_messages(messages: Any) -> list[dict[str, Any]]:
    """The conversation in OpenAI's shape; its last turn the user's or a tool's result."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest('Send what useChat sends: {"id": ..., "messages": [UIMessage, ...]}.')
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequest(f'"messages" may hold at most {MAX_MESSAGES} messages.')
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f'"messages"[{index}]'
        if not isinstance(message, dict) or not isinstance(message.get("parts"), list):
            raise InvalidRequest(f"{where} must be a UIMessage with a list of parts.")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(f'{where}.role must be one of "user", "assistant", "system".')
        if role == "assistant":
            turns += _assistant(message["parts"], where)
        else:
            turns.append({"role": role, "content": _content(message["parts"], where, role == "user")})
    if not turns or turns[-1]["role"] not in ("user", "tool"):
        raise InvalidRequest("The last of \"messages\" must be the user's, or carry a tool's result.")
    return turns


def _kind(part: Any) -> str | None:
    kind = part.get("type") if isinstance(part, dict) else None
    return kind if isinstance(kind, str) else None


def _refused(where: str, kind: str | None, what: str) -> InvalidRequest:
    named = f'"{kind[:40]}"' if kind is not None else "without a type"
    return InvalidRequest(f"{where} is a part {named}{what}; chatsse relays text, images and tool calls.")


def _content(parts: list[Any], where: str, images: bool) -> str | list[dict[str, Any]]:
    """A user's or system's text, as one string; with images, the parts in their order."""
    out: list[dict[str, Any]] = []
    for number, part in enumerate(parts):
        kind, at = _kind(part), f"{where}.parts[{number}]"
        if kind == "text" and isinstance(part.get("text"), str):
            out.append({"type": "text", "text": part["text"]})
        elif kind == "file" and images:
            media, url = part.get("mediaType"), part.get("url")
            if not isinstance(media, str) or not media.startswith("image/"):
                raise _refused(at, kind, f" of media type {str(media)[:60]!r}")
            if not isinstance(url, str) or not url.startswith(IMAGE_URLS):
                raise InvalidRequest(f"{at}.url must be a data: URL of the image (or an https URL).")
            out.append({"type": "image_url", "image_url": {"url": url}})
        elif kind not in SKIPPED_PARTS:
            raise _refused(at, kind, "")
    if any(part["type"] != "text" for part in out):
        return out
    text = "".join(part["text"] for part in out)
    if not text.strip():
        raise InvalidRequest(f"{where} must hold some text.")
    return text


def _assistant(parts: list[Any], where: str) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    step = _Step()
    for number, part in enumerate(parts):
        kind, at = _kind(part), f"{where}.parts[{number}]"
        if kind == "step-start" and step.calls:
            turns += step.turns()
            step = _Step()
        elif kind == "text" and isinstance(part.get("text"), str):
            step.text.append(part["text"])
        elif kind is not None and (kind.startswith("tool-") or kind == "dynamic-tool"):
            step.add_call(part, kind, at)
        elif kind not in SKIPPED_PARTS and kind != "file" and not (kind or "").startswith("data-"):
            raise _refused(at, kind, "")
    return turns + step.turns()


class _Step:
    """One step of an assistant's reply: its text, then the tool calls it made and their results."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []

    def add_call(self, part: dict[str, Any], kind: str, where: str) -> None:
        name = part.get("toolName") if kind == "dynamic-tool" else kind[5:]
        call_id, state = part.get("toolCallId"), part.get("state")
        if not isinstance(name, str) or not name or not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(f"{where} must be a tool part with a toolCallId and a tool name.")
        if state == "output-available":
            output = part.get("output")
            result = output if isinstance(output, str) else orjson.dumps(output).decode()
        elif state == "output-error":
            result = str(part.get("errorText") or "The tool failed.")
        elif state == "output-denied":
            result = "The user did not allow this tool call."
        else:
            return  # no result yet: not part of the conversation
        arguments = orjson.dumps(part.get("input") if part.get("input") is not None else {}).decode()
        self.calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        self.results.append({"role": "tool", "tool_call_id": call_id, "content": result})

    def turns(self) -> list[dict[str, Any]]:
        if not self.text and not self.calls:
            return []
        turn: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) if self.text else None}
        if self.calls:
            turn["tool_calls"] = self.calls
        return [turn, *self.results]
