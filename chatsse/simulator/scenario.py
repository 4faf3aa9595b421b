"""The simulator's `[sim: ...]` directives (failures, timing and reply shapes) and Azure's real error bodies.

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
                        (the usage counts them in completion_tokens_details.reasoning_tokens)
    cached=N            the usage says N of the prompt's tokens came from the cache (prompt_tokens_details)
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
    gzip=1              compress the stream (`content-encoding: gzip`), though the request asked for identity
    tools=N             answer with N tool calls, naming the request's `tools` in turn (arguments fit their schema,
                        or come from `echo:`, one per call, separated by `|`); a tool's result gets text. A request
                        with the deprecated `functions` gets one call as `delta.function_call`
    tool=NAME           call the tool NAME (also when the request has no tools: a model asking for a tool it lacks)
    arg_pieces=3,0,5    stream each call's arguments in pieces of these lengths (0: an empty piece), then the rest
    interleave=1        alternate the calls' pieces by index instead of streaming one call after the other
    preamble=1          say the reply's text before the tool calls (as models often do: "Let me look that up.")
    refusal=1           stream the reply as `refusal` deltas instead of content
    builtin=1           (Responses) a built-in tool's item and an event type no client knows, before the reply
The request's own `n`, `logprobs`/`top_logprobs` and `response_format` are followed (see replies.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

DIRECTIVE = re.compile(r"\[sim:([^\]]*)\]")
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
    cached: int = 0
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
    gzip: bool = False
    tools: int = 0
    tool: str = ""
    arg_pieces: str = ""
    interleave: bool = False
    preamble: bool = False
    refusal: bool = False
    builtin: bool = False


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
