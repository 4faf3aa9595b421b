"""Input guards: a request's text checked before any upstream call. The local kinds read every message's text (and
text parts), tool calls' arguments and tool results, and a Responses API body's input and instructions: `redact`
rewrites them, `flag` counts, `block` refuses the request with `400 prompt_blocked`. Prompt Shields reads the
latest user message and the tool results; Content Safety the latest user message. A service that fails follows the
guard's `on_error`: through (`open`), or `503 guard_unavailable` (`closed`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatsse.errors import GuardUnavailable, PromptBlocked
from chatsse.events import Event
from chatsse.guards.config import SERVICE_KINDS, GuardConfig, GuardTables
from chatsse.guards.passthrough import PassthroughScreen
from chatsse.guards.services import ContentSafety, ServiceFailed
from chatsse.guards.stream import Screen
from chatsse.guards.watch import Watch
from chatsse.schema import ChatRequest

log = logging.getLogger("chatsse")

TEXT_KEYS = frozenset({"content", "text", "arguments", "output", "input", "instructions"})


async def guard_request(
    chat: ChatRequest,
    tables: GuardTables,
    named: tuple[tuple[str, ...] | None, ...],
    acted: Callable[[GuardConfig, str], None],
    safety: ContentSafety,
    failed: Callable[[GuardConfig], None],
) -> tuple[ChatRequest, Output]:
    """A request's guards (everyone's, then those `named` by its caller and team): its input checked now, and what
    its reply's text will pass through. `failed` counts a service's failure."""
    guards = tables.for_names(*named)
    if not guards:
        return chat, NO_OUTPUT
    local = [guard for guard in guards if guard.kind not in SERVICE_KINDS]
    chat = screen_input(chat, local, lambda guard: acted(guard, "input"))
    for guard in guards:
        if guard.kind in SERVICE_KINDS and guard.checks("input"):
            await _ask_service(chat, guard, safety, acted, failed)
    output = [guard for guard in guards if guard.checks("output") and guard.kind not in SERVICE_KINDS]
    watched = [guard for guard in guards if guard.checks("output") and guard.kind == "content_safety"]
    screen = Screen(output, lambda guard: acted(guard, "output")) if output else None
    watch = Watch(watched, safety, lambda guard: acted(guard, "output"), failed) if watched else None
    return chat, Output(screen, watch)


@dataclass(frozen=True)
class Output:
    """What a reply's text passes through: the Content Safety watch, then the local guards' screen (either may be
    None). A Responses upstream's own events need their screen in its Passthrough form, item by item."""

    screen: Screen | None
    watch: Watch | None

    def screen_for(self, passthrough: bool) -> Callable[[list[Event], bool], list[Event]] | None:
        if not passthrough or (self.screen is None and self.watch is None):
            return self.screen
        return PassthroughScreen(self.screen or Screen([], lambda guard: None))


NO_OUTPUT = Output(None, None)


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


async def _ask_service(
    chat: ChatRequest,
    guard: GuardConfig,
    safety: ContentSafety,
    acted: Callable[[GuardConfig, str], None],
    failed: Callable[[GuardConfig], None],
) -> None:
    prompt = next((_text(m.get("content")) for m in reversed(chat.messages) if m.get("role") == "user"), "")
    try:
        if guard.kind == "prompt_shield":
            documents = [_text(m.get("content")) for m in chat.messages if m.get("role") == "tool"]
            hit = await safety.attacked(guard, prompt, documents)
            why = "found a prompt attack"
        else:
            categories = await safety.harmful(guard, prompt)
            hit, why = bool(categories), "rated it " + ", ".join(categories)
    except ServiceFailed as failure:
        failed(guard)
        log.warning("guard %s: Azure AI Content Safety failed (%s); on_error = %s", guard.name, failure, guard.on_error)
        if guard.on_error == "closed":
            raise GuardUnavailable() from None
        return
    if hit:
        acted(guard, "input")
        if guard.action == "block":
            raise PromptBlocked(f"The request was refused by the gateway's {guard.name!r} guard: it {why}.")


def _text(content: Any) -> str:
    """A message's text: its string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _walk(value: Any, check: Callable[[str], str], key: str | None = None) -> Any:
    """`value` with every string under a text key passed through `check` (a new structure; the old is left)."""
    if isinstance(value, str):
        return check(value) if key in TEXT_KEYS else value
    if isinstance(value, dict):
        return {name: _walk(item, check, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_walk(item, check, key) for item in value]
    return value
