"""A reply's tokens: the upstream's own count where it sent one, else an estimate from the text (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb for English text; estimates are marked as such
TOKENS_PER_MESSAGE = 4  # the chat format's own tokens around each message


@dataclass(frozen=True)
class Tokens:
    prompt: int
    completion: int  # reasoning tokens included, as Azure counts them
    estimated: bool  # the upstream sent no usage (an old api-version, a reply cut short or stopped)
    cached: int = 0  # of the prompt's, read from the upstream's cache (billed at the cached price)

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def count_tokens(usage: dict[str, Any] | None, messages: Sequence[dict[str, Any]], relayed_chars: int) -> Tokens:
    """From `usage` when it holds both counts, else estimated from the prompt and the text relayed so far."""
    if usage is not None:
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            details = usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, dict) else None
            return Tokens(prompt, completion, False, cached if isinstance(cached, int) and cached > 0 else 0)
    prompt_chars = sum(len(str(message.get("content") or "")) for message in messages)
    estimate = TOKENS_PER_MESSAGE * len(messages) + math.ceil(prompt_chars / CHARS_PER_TOKEN)
    return Tokens(estimate, math.ceil(relayed_chars / CHARS_PER_TOKEN), True)
