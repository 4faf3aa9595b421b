"""Azure's chunk sequence as `data:` event bytes (2025 shape: keys sorted, content_filter_results), for every
choice of a reply, with tool-call pieces, refusals and logprobs as Azure sends them."""

from __future__ import annotations

import json
from typing import Any

from chatsse.simulator.scenario import ERROR_BODIES, SAFE

CREATED = 1742460935
MODEL = "gpt-4o-2024-11-20"


class Frames:
    """One reply's chunks; `logprobs` (the request's `top_logprobs`, or None) adds logprobs to each text piece."""

    DONE = b"data: [DONE]\n\n"

    def __init__(self, chat_id: str, ascii_only: bool, include_usage: bool, logprobs: int | None = None) -> None:
        self.chat_id = chat_id
        self.ascii_only = ascii_only
        self.include_usage = include_usage
        self.logprobs = logprobs

    def _event(self, payload: dict[str, Any]) -> bytes:
        text = json.dumps(payload, ensure_ascii=self.ascii_only, separators=(",", ":"), sort_keys=True)
        return b"data: " + text.encode() + b"\n\n"

    def _chunk(
        self,
        delta: dict[str, Any],
        finish: str | None,
        filters: dict[str, Any],
        choice: int = 0,
        logprobs: dict[str, Any] | None = None,
    ) -> bytes:
        entry = {
            "content_filter_results": filters,
            "delta": delta,
            "finish_reason": finish,
            "index": choice,
            "logprobs": logprobs,
        }
        payload: dict[str, Any] = {
            "choices": [entry],
            "created": CREATED,
            "id": self.chat_id,
            "model": MODEL,
            "object": "chat.completion.chunk",
            "system_fingerprint": "fp_ded0d14823",
        }
        if self.include_usage:
            payload["usage"] = None
        return self._event(payload)

    def prompt_filter(self) -> bytes:
        return self._event(
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}],
            }
        )

    def role(self, choice: int = 0) -> bytes:
        return self._chunk({"content": "", "refusal": None, "role": "assistant"}, None, {}, choice)

    def content(self, text: str, choice: int = 0) -> bytes:
        return self._chunk({"content": text}, None, SAFE, choice, self._logprobs("content", text))

    def refusal(self, text: str, choice: int = 0) -> bytes:
        return self._chunk({"content": None, "refusal": text}, None, SAFE, choice, self._logprobs("refusal", text))

    def reasoning(self, text: str) -> bytes:
        return self._chunk({"content": None, "reasoning_content": text}, None, {})

    def tool_call(self, index: int, call_id: str | None, name: str | None, arguments: str) -> bytes:
        """A piece of tool call `index`: the first names it (and has empty arguments), the rest carry arguments."""
        call: dict[str, Any] = {"function": {"arguments": arguments}, "index": index}
        if call_id is not None:
            call |= {"id": call_id, "type": "function", "function": {"arguments": arguments, "name": name}}
        delta: dict[str, Any] = {"tool_calls": [call]}
        if call_id is not None and index == 0:
            delta["content"] = None
        return self._chunk(delta, None, {})

    def function_call(self, name: str | None, arguments: str) -> bytes:
        """A piece of the deprecated `function_call`: the first names the function, the rest carry arguments."""
        call: dict[str, Any] = {"arguments": arguments} if name is None else {"arguments": arguments, "name": name}
        return self._chunk({"function_call": call} | ({"content": None} if name is not None else {}), None, {})

    def finish(self, reason: str, choice: int = 0) -> bytes:
        filters = {**SAFE, "violence": {"filtered": True, "severity": "medium"}} if reason == "content_filter" else {}
        return self._chunk({}, reason, filters, choice)

    def usage(self, prompt_tokens: int, completion_tokens: int, cached: int = 0, reasoning: int = 0) -> bytes:
        usage: dict[str, Any] = {
            "completion_tokens": completion_tokens,
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if cached:  # as Azure reports a prompt cache hit
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return self._event(
            {
                "choices": [],
                "created": CREATED,
                "id": self.chat_id,
                "model": MODEL,
                "object": "chat.completion.chunk",
                "system_fingerprint": "fp_ded0d14823",
                "usage": usage,
            }
        )

    def _logprobs(self, kind: str, text: str) -> dict[str, Any] | None:
        if self.logprobs is None:
            return None
        token = {"token": text, "logprob": -0.25, "bytes": list(text.encode())}
        top = [{**token, "logprob": -0.25 - rank} for rank in range(self.logprobs)]
        other = "refusal" if kind == "content" else "content"
        return {kind: [{**token, "top_logprobs": top}], other: None}

    @staticmethod
    def malformed() -> bytes:
        return b'data: {"choices":[{"delta":{"content":"trunc\n\n'

    @staticmethod
    def in_stream_error() -> bytes:
        return b"data: " + json.dumps(ERROR_BODIES[500], separators=(",", ":")).encode() + b"\n\n"
