"""Responses API input items as chat messages, for an upstream speaking chat completions (pure, no I/O): messages
as turns, `function_call` items as an assistant's tool calls (parallel ones in one turn), `function_call_output` as
tool turns; a model's earlier reasoning is left out. What only a Responses upstream can read (an `item_reference`,
a built-in tool's items, an uploaded file's id) is handed to `only`, which names it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatsse.completion_request import invalid

MAX_ITEMS = 4096
ROLES = ("user", "system", "developer", "assistant")


class InputItems:
    """`input` (a string or a list of items) appended to `messages`, checked; a bad item is a 400 naming it."""

    def __init__(self, messages: list[dict[str, Any]], only: Callable[[str], None]) -> None:
        self.messages = messages
        self.only = only

    def add(self, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, str):
            self.messages.append({"role": "user", "content": value})
            return
        if not isinstance(value, list):
            raise invalid("input", "a string or a list of input items")
        if len(value) > MAX_ITEMS:
            raise invalid("input", f"a list of at most {MAX_ITEMS} items")
        for index, item in enumerate(value):
            self._item(item, f"input[{index}]")

    def _item(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise invalid(where, "an input item (an object)")
        kind = item.get("type", "message")
        if kind == "message":
            self._message(item, where)
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise invalid(f"{where}.{key}", "a string")
            function = {"name": item["name"], "arguments": item["arguments"]}
            call = {"id": item["call_id"], "type": "function", "function": function}
            last = self.messages[-1] if self.messages else None
            if last is not None and last["role"] == "assistant" and "tool_call_id" not in last:
                last.setdefault("tool_calls", []).append(call)  # parallel calls: one assistant turn
            else:
                self.messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise invalid(f"{where}.call_id", "a string")
            output = item.get("output")
            if isinstance(output, list):
                output = _text_of(output, f"{where}.output")
            if not isinstance(output, str):
                raise invalid(f"{where}.output", "a string or a list of text parts")
            self.messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
        elif kind == "reasoning":
            pass  # a model's earlier thinking: a chat upstream takes none, and it changes no later answer there
        elif isinstance(kind, str):
            self.only(f"{where}.type")  # item_reference, built-in tool calls and their outputs: Responses' own
        else:
            raise invalid(f"{where}.type", "a string such as message or function_call")

    def _message(self, item: dict[str, Any], where: str) -> None:
        role = item.get("role")
        if role not in ROLES:
            raise invalid(f"{where}.role", "one of " + ", ".join(ROLES))
        content = item.get("content")
        if isinstance(content, str):
            self.messages.append({"role": role, "content": content})
            return
        if not isinstance(content, list):
            raise invalid(f"{where}.content", "a string or a list of content parts")
        parts: list[dict[str, Any]] = []
        refusal = None
        for number, part in enumerate(content):
            at = f"{where}.content[{number}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "output_text", "text"):
                if not isinstance(part.get("text"), str):
                    raise invalid(f"{at}.text", "a string")
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "refusal":
                if not isinstance(part.get("refusal"), str):
                    raise invalid(f"{at}.refusal", "a string")
                refusal = part["refusal"]
            elif kind == "input_image":
                url = part.get("image_url")
                if not isinstance(url, str):
                    self.only(f"{at}.file_id")  # an uploaded file: only the resource that has it can read it
                    continue
                image = {"url": url, **({"detail": part["detail"]} if part.get("detail") else {})}
                parts.append({"type": "image_url", "image_url": image})
            elif kind == "input_file" and isinstance(part.get("file_data"), str):
                file = {key: part[key] for key in ("file_data", "filename") if isinstance(part.get(key), str)}
                parts.append({"type": "file", "file": file})
            elif isinstance(kind, str):
                self.only(f"{at}.type")
            else:
                raise invalid(f"{at}.type", "a string such as input_text")
        message: dict[str, Any] = {"role": role, "content": _flat(parts)}
        if refusal is not None:
            message["refusal"] = refusal
        self.messages.append(message)


def _flat(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    """Text parts alone as one string (every chat upstream takes it); others as parts."""
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts) if parts else None
    return parts


def _text_of(parts: list[Any], where: str) -> str:
    texts = []
    for number, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise invalid(f"{where}[{number}]", "a text part")
        texts.append(part["text"])
    return "".join(texts)
