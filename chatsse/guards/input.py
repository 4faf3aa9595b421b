"""Input guards: a request's text checked before any upstream call: every message's text (and text parts), tool
calls' arguments and tool results, and a Responses API body's input and instructions. `redact` rewrites them,
`flag` counts, `block` refuses the request with `400 prompt_blocked` (pure)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from chatsse.errors import PromptBlocked
from chatsse.guards.config import GuardConfig, GuardTables
from chatsse.guards.stream import Screen
from chatsse.schema import ChatRequest

TEXT_KEYS = frozenset({"content", "text", "arguments", "output", "input", "instructions"})


def guard_request(
    chat: ChatRequest,
    tables: GuardTables,
    named: tuple[tuple[str, ...] | None, ...],
    acted: Callable[[GuardConfig, str], None],
) -> tuple[ChatRequest, Screen | None]:
    """A request's guards (everyone's, then those `named` by its caller and team): its input checked now, and the
    screen its reply's text will pass through (None: no output guard)."""
    guards = tables.for_names(*named)
    if not guards:
        return chat, None
    chat = screen_input(chat, guards, lambda guard: acted(guard, "input"))
    output = [guard for guard in guards if guard.checks("output")]
    return chat, Screen(output, lambda guard: acted(guard, "output")) if output else None


def screen_input(chat: ChatRequest, guards: list[GuardConfig], acted: Callable[[GuardConfig], None]) -> ChatRequest:
    """`chat` as the upstream may see it, or PromptBlocked naming the guard that refused it."""
    for guard in guards:
        if not guard.checks("input"):
            continue
        found: list[int] = []

        def check(text: str, guard: GuardConfig = guard, found: list[int] = found) -> str:
            redacted, hits = guard.detector.redact(text)
            found.append(len(hits))
            return redacted if hits and guard.action == "redact" else text

        messages = [_walk(message, check) for message in chat.messages]
        body = _walk(chat.responses_body, check) if chat.responses_body is not None else None
        if not any(found):
            continue
        acted(guard)
        if guard.action == "block":
            raise PromptBlocked(f"The request was refused by the gateway's {guard.name!r} guard.")
        if guard.action == "redact":
            chat = dataclasses.replace(chat, messages=messages, responses_body=body)
    return chat


def _walk(value: Any, check: Callable[[str], str], key: str | None = None) -> Any:
    """`value` with every string under a text key passed through `check` (a new structure; the old is left)."""
    if isinstance(value, str):
        return check(value) if key in TEXT_KEYS else value
    if isinstance(value, dict):
        return {name: _walk(item, check, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_walk(item, check, key) for item in value]
    return value
