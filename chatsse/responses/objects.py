"""What the Responses API writes, for a response synthesized over an upstream speaking chat completions: its events'
framing, its output items, the Response object, its usage (pure, no I/O)."""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from chatsse.events import Annotation
from chatsse.schema import is_number
from chatsse.sse import encode_json


def new_id(prefix: str) -> str:
    """An id of the API's kind: `resp_`, `msg_`, `fc_` ... and 32 random hex digits."""
    return prefix + secrets.token_hex(16)


# A text delta while its part is open, as `frame` writes it, from a template: the sequence number, where it goes
# (`text_at`), its text as JSON.
TEXT_DELTA = (
    b"event: response.output_text.delta\ndata: "
    b'{"type":"response.output_text.delta","sequence_number":%d,%b"delta":%b,"logprobs":[]}\n\n'
)


class OutputItem:
    """One output item being streamed: a message, a reasoning summary or a function call."""

    def __init__(self, index: int, item: dict[str, Any]) -> None:
        self.index = index
        self.item = item
        self.parts: list[dict[str, Any]] = []  # a message's content parts, or a reasoning item's summary parts
        self.texts: list[list[str]] = []  # the text of each part, in pieces
        self.arguments: list[str] = []  # a function call's

    def now(self) -> dict[str, Any]:
        """The item as it stands: as it ended, or what it holds so far (`incomplete`) when the reply broke off."""
        item = self.item
        if item["type"] == "reasoning" and not item["summary"] and self.texts:
            return {**item, "summary": [{"type": "summary_text", "text": "".join(self.texts[0])}]}
        if item.get("status") != "in_progress":
            return item
        if item["type"] == "function_call":
            return {**item, "status": "incomplete", "arguments": "".join(self.arguments)}
        parts = [
            {"type": "refusal", "refusal": "".join(text)}
            if part["type"] == "refusal"
            else {"type": "output_text", "text": "".join(text), "annotations": [], "logprobs": []}
            for part, text in zip(self.parts, self.texts, strict=True)
        ]
        return {**item, "status": "incomplete", "content": parts}


def frame(kind: str, fields: dict[str, Any]) -> bytes:
    """One Responses event, as the API writes it: an `event:` line and its JSON, whose `type` repeats it."""
    return b"event: " + kind.encode() + b"\ndata: " + encode_json({"type": kind, **fields}) + b"\n\n"


def response_object(
    response_id: str, created_at: int, model: str, body: dict[str, Any], status: str, output: list[dict[str, Any]]
) -> dict[str, Any]:
    """The Response for request `body` as it stands; nothing is stored upstream, so `store` is false."""
    text = body.get("text") or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": False,
        "temperature": body.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
    }


def usage_of(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A chat completion's usage in the Responses API's shape."""
    if chat_usage is None:
        return None
    prompt, completion = chat_usage.get("prompt_tokens", 0), chat_usage.get("completion_tokens", 0)
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    total = chat_usage.get("total_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached or 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning or 0},
        "total_tokens": total if is_number(total) else prompt + completion,
    }


def response_in(data: str) -> dict[str, Any] | None:
    """The Response an event's JSON carries (`response.created`, `.completed`, ...), if it carries one."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    response = event.get("response") if isinstance(event, dict) else None
    return response if isinstance(response, dict) else None


def note_filters(filters: dict[str, dict[str, Any]], note: Annotation) -> None:
    """Azure's filter results over a chat upstream, kept in `filters` as its Responses API gives them
    (`content_filters`: one entry for the prompt, one for the completion; a category filtered once stays so)."""
    if note.choice is None:
        given = note.results[0] if isinstance(note.results, list) and note.results else {}
        results = given.get("content_filter_results") if isinstance(given, dict) else None
        source = "prompt"
    else:
        results, source = note.results, "completion"
    if not isinstance(results, dict) or not results:
        return
    entry = filters.setdefault(source, {"blocked": False, "source_type": source, "content_filter_results": {}})
    merged = entry["content_filter_results"]
    for category, result in results.items():
        if not (isinstance(merged.get(category), dict) and merged[category].get("filtered")):
            merged[category] = result
        if isinstance(result, dict) and result.get("filtered"):
            entry["blocked"] = True
