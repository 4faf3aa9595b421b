"""Output guards on a streaming reply: each choice's text passes through each guard's window, and is released only
once the `hold_back` characters after it have been checked, so a secret split across any chunk boundary is
replaced before any prefix of it leaves; at the reply's end the rest is checked and released (pure).

`redact` replaces a match with its placeholder, `flag` lets it through and counts it, `block` ends the reply with
`done` (`finish_reason: "content_filter"`, `filtered: [<guard>]`) after the text checked before the match.
"""

from __future__ import annotations

from collections.abc import Callable

from chatsse.events import Content, Done, Event, Failed, Finish, Refusal
from chatsse.guards.config import GuardConfig
from chatsse.guards.detectors import PRIVATE_KEY_END, TRIGGER_REACH, Found

CONTEXT = 16  # characters of released text kept, so a pattern's look-behind sees what came before
FOOTER_REACH = 48  # a private key's footer may be split: this much stays while a key block is swallowed


class Window:
    """One choice's text through one guard."""

    def __init__(self, guard: GuardConfig) -> None:
        self.guard = guard
        self.pending = ""
        self.context = ""
        self.in_key = False  # inside a private key block: swallowed up to its footer
        self.trigger = guard.detector.trigger
        self.triggered = False  # `pending` holds a trigger: it must be scanned

    def feed(self, text: str, final: bool) -> tuple[str, list[Found]]:
        """What can be released now (checked, redacted), and what was found in it."""
        self.pending += text
        out: list[str] = []
        found: list[Found] = []
        if self.trigger is not None and not self.in_key:
            # Only the new text (with what a trigger may have begun before it) is looked at: the rest was.
            fresh = self.pending[-(len(text) + TRIGGER_REACH) :]
            self.triggered = self.triggered or self.trigger.search(fresh) is not None
            if not self.triggered:  # nothing here can match: release what the window allows, unscanned
                cut = len(self.pending) if final else len(self.pending) - self.guard.hold_back
                if cut > 0:
                    out.append(self.pending[:cut])
                    self.context, self.pending = (self.context + self.pending[:cut])[-CONTEXT:], self.pending[cut:]
                return "".join(out), found
        while self.pending:
            if self.in_key:
                footer = PRIVATE_KEY_END.search(self.pending)
                if footer is None:
                    self.pending = "" if final else self.pending[-FOOTER_REACH:]
                    break
                self.pending, self.in_key = self.pending[footer.end() :], False
                continue
            if not self._release(out, found, final):
                break
        if self.trigger is not None:  # what is left may no longer hold the trigger that sent it through the scan
            self.triggered = self.trigger.search(self.pending) is not None
        return "".join(out), found

    def _release(self, out: list[str], found: list[Found], final: bool) -> bool:
        """Release what is checked; True if a key block began (the rest of `pending` is to be swallowed)."""
        if self.guard.action == "block":
            return self._block(out, found, final)
        pending = self.pending
        cut = len(pending) if final else len(pending) - self.guard.hold_back
        if cut <= 0:
            return False
        offset, at = len(self.context), 0
        for item in self.guard.detector.find(self.context + pending, offset, offset + cut):
            start, end = item.start - offset, item.end - offset
            if start >= cut:
                break
            if end > cut and not final:
                cut = start  # its end is not released yet: hold all of it
                break
            found.append(item)
            keep = self.guard.action == "flag"
            out += [pending[at:start], pending[start:end] if keep else item.placeholder]
            at = end
            if item.name == "private_key" and not keep:
                self.context, self.pending, self.in_key = "", pending[end:], True
                return True
        out.append(pending[at:cut])
        self.context = (self.context + pending[:cut])[-CONTEXT:]
        self.pending = pending[cut:]
        return False

    def _block(self, out: list[str], found: list[Found], final: bool) -> bool:
        """A block does not wait for the window: the first match whose end is known (a character follows it, or the
        reply ended) ends the reply, after the text before it; until then, text is released as the window allows."""
        pending, offset = self.pending, len(self.context)
        for item in self.guard.detector.find(self.context + pending, offset):
            if item.end - offset < len(pending) or final:
                found.append(item)
                out.append(pending[: item.start - offset])
                self.pending = ""
                return False
        cut = len(pending) if final else len(pending) - self.guard.hold_back
        if cut > 0:
            out.append(pending[:cut])
            self.context, self.pending = (self.context + pending[:cut])[-CONTEXT:], pending[cut:]
        return False


class Screen:
    """A reply's output guards (in order, each one's release feeding the next), per choice. `acted(guard, action)`
    counts each action; `blocked` names the guard that ended the reply."""

    def __init__(self, guards: list[GuardConfig], acted: Callable[[GuardConfig], None]) -> None:
        self.guards = guards
        self.acted = acted
        self.windows: dict[int, list[Window]] = {}
        self.kinds: dict[int, type[Content] | type[Refusal]] = {}  # what each choice's held text is
        self.blocked: str | None = None

    def __call__(self, events: list[Event], final: bool) -> list[Event]:
        out: list[Event] = []
        if self.blocked is not None:
            return out  # the reply ended at the block: nothing after it goes out
        for event in events:
            if isinstance(event, Content | Refusal) and event.text:
                self.kinds[event.choice] = type(event)
                text = self.through(event.choice, event.text, False)
                if text or event.logprobs is not None:
                    out.append(type(event)(text, event.choice, event.logprobs))
            elif isinstance(event, Finish | Done | Failed):
                for choice in [event.choice] if isinstance(event, Finish) else list(self.windows):
                    self._flush(choice, out)
            if self.blocked is not None:  # what was checked before the match went out; nothing after it does
                out.append(Done("content_filter", None, [self.blocked]))
                return out
            if not isinstance(event, Content | Refusal) or not event.text:
                out.append(event)
        if final:
            for choice in list(self.windows):
                self._flush(choice, out)
            if self.blocked is not None:
                out.append(Done("content_filter", None, [self.blocked]))
        return out

    def through(self, choice: int, text: str, final: bool) -> str:
        windows = self.windows.get(choice)
        if windows is None:
            windows = self.windows[choice] = [Window(guard) for guard in self.guards]
        for window in windows:
            text, found = window.feed(text, final)
            if found:
                self.acted(window.guard)
                if window.guard.action == "block":
                    self.blocked = window.guard.name
                    return text
        return text

    def _flush(self, choice: int, out: list[Event]) -> None:
        if choice in self.windows:
            text = self.through(choice, "", True)
            del self.windows[choice]
            if text:
                out.append(self.kinds.get(choice, Content)(text, choice))
