"""What the simulator says: reply text from the prompt, `[sim: ...]` directives, and Azure-shaped bytes.

A directive anywhere in the last user message picks a behaviour, e.g. `[sim: status=429 retry_after_ms=50 times=1]`
or `[sim: delay=0.05 cut_after=3]`. Keys (all optional):

    status=N            answer N with Azure's real error body instead of a stream (400 = prompt content filter)
    times=N             only the first N requests with this exact prompt get `status` (or `drop`); later ones stream
    drop=1              close the connection without any response
    chance=P            apply `status` or `drop` to only a share P (0 to 1) of requests, at random
    retry_after=S       `retry-after` header on a 429 (default 1); retry_after_ms=MS adds `retry-after-ms`
    delay=S             seconds between content chunks (absolute schedule, no drift); first_delay=S before the first
    tokens=N            reply with N filler tokens instead of the derived text
    reasoning=N         first stream N "thinking" tokens in delta.reasoning_content, as vLLM, Ollama and DeepSeek do
    cut_after=N         drop the connection after N content chunks (no [DONE], no final HTTP chunk)
    malformed_after=N   send a broken JSON chunk after N content chunks
    error_after=N       send an in-stream `{"error": ...}` after N content chunks, then end without [DONE]
    silence_after=N     go silent after N content chunks for `silence` seconds (default 300) or until hung up
    hold_after=N        after N content chunks wait until the test calls `Simulator.release(hold)`
    hold=NAME           the name for hold_after (default "default")
    finish=REASON       finish_reason of the last chunk (default stop; e.g. length, content_filter)
    no_done=1           end after the finish chunk without `data: [DONE]`
    split=N             write the body in N-byte pieces (events and UTF-8 characters split across reads)
    ascii=1             escape non-ASCII as \\uXXXX in the JSON, as some serializers do
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any

DIRECTIVE = re.compile(r"\[sim:([^\]]*)\]")
TOKEN = re.compile(r"\s*\S{1,12}|\s+")  # roughly word-sized pieces, as a model streams them
FILLER = ("Lorem", " ipsum", " dolor", " sit", " amet", ",", " consectetur", " adipiscing", " elit", ".")
CREATED = 1742460935
MODEL = "gpt-4o-2024-11-20"
SAFE = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}

# Real Azure error bodies (shared/fixtures/azure), by status.
ERROR_BODIES: dict[int, dict[str, Any]] = {
    400: {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
            "management policy. Please modify your prompt and retry.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {**SAFE, "violence": {"filtered": True, "severity": "medium"}},
            },
        }
    },
    401: {
        "error": {
            "code": "401",
            "message": "Access denied due to invalid subscription key or wrong API endpoint. "
            "Make sure to provide a valid key for an active subscription and use a correct regional API endpoint "
            "for your resource.",
        }
    },
    403: {
        "error": {
            "code": "AuthenticationTypeDisabled",
            "message": "Key based authentication is disabled for this resource.",
        }
    },
    404: {
        "error": {
            "code": "DeploymentNotFound",
            "message": "The API deployment for this resource does not exist. "
            "If you created the deployment within the last 5 minutes, please wait a moment and try again.",
        }
    },
    429: {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI "
            "API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please "
            "retry after 1 second.",
        }
    },
    500: {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    },
}
RESOURCE_NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
BAD_REQUEST = {
    "error": {"message": "Invalid request body.", "type": "invalid_request_error", "param": None, "code": None}
}


@dataclass
class Scenario:
    status: int = 200
    times: int = 0
    retry_after: float = 1.0
    retry_after_ms: int | None = None
    delay: float = 0.0
    first_delay: float = 0.0
    tokens: int = 0
    reasoning: int = 0
    cut_after: int = -1
    malformed_after: int = -1
    error_after: int = -1
    silence_after: int = -1
    silence: float = 300.0
    hold_after: int = -1
    hold: str = "default"
    finish: str = "stop"
    no_done: bool = False
    drop: bool = False
    chance: float = 1.0
    split: int = 0
    ascii: bool = False


def parse_scenario(text: str, default_delay: float = 0.0) -> tuple[Scenario, str]:
    """The scenario the prompt asks for, and the prompt with its directives removed."""
    scenario = Scenario(delay=default_delay)
    types = {f.name: f.type for f in fields(Scenario)}
    for match in DIRECTIVE.finditer(text):
        for item in match.group(1).split():
            key, _, value = item.partition("=")
            kind = types.get(key)
            if kind is None:
                continue
            try:
                if kind == "bool":
                    setattr(scenario, key, value not in ("0", "false", "no"))
                elif kind == "str":
                    setattr(scenario, key, value)
                elif kind == "float":
                    setattr(scenario, key, float(value))
                else:
                    setattr(scenario, key, int(value))
            except ValueError:
                continue
    return scenario, DIRECTIVE.sub("", text).strip()


def reply_text(messages: list[dict[str, Any]], scenario: Scenario) -> str:
    """Deterministic reply: `echo:<text>` answers <text> exactly; otherwise a friendly, prompt-derived sentence."""
    if scenario.tokens > 0:
        return "".join(FILLER[i % len(FILLER)] for i in range(scenario.tokens))
    user_turns = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    raw = str(user_turns[-1].get("content", "")) if user_turns else ""
    if "echo:" in raw:
        return DIRECTIVE.sub("", raw.partition("echo:")[2])
    prompt = DIRECTIVE.sub("", raw).strip()
    return (
        f"Hello! This is chatsse's built-in simulator, not a real model (turn {len(user_turns)}). "
        f"You said: \u201c{prompt}\u201d."
    )


def split_tokens(text: str, scenario: Scenario) -> list[str]:
    if scenario.tokens > 0:
        return [FILLER[i % len(FILLER)] for i in range(scenario.tokens)]
    return TOKEN.findall(text)


class Frames:
    """Azure's chunk sequence as `data:` event bytes (2025 shape: keys sorted, content_filter_results)."""

    def __init__(self, chat_id: str, ascii_only: bool, include_usage: bool) -> None:
        self.chat_id = chat_id
        self.ascii_only = ascii_only
        self.include_usage = include_usage

    def _event(self, payload: dict[str, Any]) -> bytes:
        text = json.dumps(payload, ensure_ascii=self.ascii_only, separators=(",", ":"), sort_keys=True)
        return b"data: " + text.encode() + b"\n\n"

    def _chunk(self, delta: dict[str, Any], finish: str | None, filters: dict[str, Any]) -> bytes:
        choice = {
            "content_filter_results": filters,
            "delta": delta,
            "finish_reason": finish,
            "index": 0,
            "logprobs": None,
        }
        payload: dict[str, Any] = {
            "choices": [choice],
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

    def role(self) -> bytes:
        return self._chunk({"content": "", "refusal": None, "role": "assistant"}, None, {})

    def content(self, text: str) -> bytes:
        return self._chunk({"content": text}, None, SAFE)

    def reasoning(self, text: str) -> bytes:
        return self._chunk({"content": None, "reasoning_content": text}, None, {})

    def finish(self, reason: str) -> bytes:
        filters = {**SAFE, "violence": {"filtered": True, "severity": "medium"}} if reason == "content_filter" else {}
        return self._chunk({}, reason, filters)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        usage = {
            "completion_tokens": completion_tokens,
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
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

    @staticmethod
    def malformed() -> bytes:
        return b'data: {"choices":[{"delta":{"content":"trunc\n\n'

    @staticmethod
    def in_stream_error() -> bytes:
        return b"data: " + json.dumps(ERROR_BODIES[500], separators=(",", ":")).encode() + b"\n\n"

    DONE = b"data: [DONE]\n\n"
