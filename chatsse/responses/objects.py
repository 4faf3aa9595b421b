"""The Response object and its usage as the Responses API shows them, for a response synthesized over an upstream
speaking chat completions (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from chatsse.schema import is_number


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
