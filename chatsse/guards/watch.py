"""Azure AI Content Safety on a streaming reply: its text is cut into windows that end at a sentence's end (or at
`hold_back` characters), each window is checked by one `text:analyze` call while the reply goes on being read and
earlier windows stream, and a window goes out, with the events around it in their order, once its check passed.

A window rated at a guard's threshold ends the reply (`block`: `done` with `finish_reason: "content_filter"` and the
guard's name, the upstream closed) or goes out counted (`flag`). A check that fails follows the guard's `on_error`:
the window goes out (`open`) or the reply ends with `guard_unavailable` (`closed`); every failure is counted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import orjson

from chatsse.errors import ChatSSEError, GuardUnavailable
from chatsse.events import Content, Done, Event, Failed, Passthrough, Refusal
from chatsse.guards.config import GuardConfig
from chatsse.guards.services import ContentSafety, ServiceFailed

log = logging.getLogger("chatsse")

# A piece of text that ends a sentence: its punctuation last (tokens rarely carry the space after it), or inside it.
SENTENCE_END = re.compile(r"[.!?。！？][\"')\]]*\s*$|[.!?。！？]\s|\n")
IN_FLIGHT = 4  # windows checked at once per reply; past that, reading the upstream waits for the oldest
TEXT_DELTAS = frozenset(("response.output_text.delta", "response.refusal.delta"))  # a Responses upstream's text

Step = tuple[list[Event], bool]  # a batch of events, and whether it is the reply's last


def text_of(event: Event) -> str:
    """The reply text an event carries: a delta's, or a Responses upstream's own text delta's."""
    if isinstance(event, Content | Refusal):
        return event.text
    if isinstance(event, Passthrough) and event.kind in TEXT_DELTAS:
        delta = orjson.loads(event.data).get("delta")
        return delta if isinstance(delta, str) else ""
    return ""


@dataclass
class _Window:
    events: list[Event] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    size: int = 0
    check: asyncio.Future[str | None] | None = None  # the guard that refused it, once checked (None: no text)


class Watch:
    """The output `content_safety` guards of one reply. `blocked` names the guard that ended it."""

    def __init__(
        self,
        guards: list[GuardConfig],
        safety: ContentSafety,
        acted: Callable[[GuardConfig], None],
        failed: Callable[[GuardConfig], None],
    ) -> None:
        self.guards = guards
        self.safety = safety
        self.acted = acted
        self.failed = failed
        self.hold_back = min(guard.hold_back for guard in guards)
        self.blocked: str | None = None
        self.failure: ChatSSEError | None = None  # a closed guard that could not check: the reply ended with it

    async def run(self, source: AsyncGenerator[Step, None]) -> AsyncGenerator[Step, None]:
        """`source`'s batches, each released once the windows of text in and before it have been checked."""
        windows: deque[_Window] = deque()
        current = _Window()
        read: asyncio.Future[Step] | None = None  # a read under way while windows are checked
        ended = False
        try:
            while True:
                while windows and (windows[0].check is None or windows[0].check.done()):
                    window = windows.popleft()
                    ending = self._verdict(window)
                    if ending is not None:
                        yield [ending], True
                        return
                    yield window.events, ended and not windows and not current.events
                if ended and not windows:
                    if current.events:  # what followed the last text (its done): nothing to check
                        yield current.events, True
                    return
                if read is None and not windows:  # nothing is being checked: a plain read, without a task
                    events, last = await anext(source, ([], True))
                else:
                    if not ended and read is None and len(windows) < IN_FLIGHT:
                        read = asyncio.ensure_future(anext(source, ([], True)))
                    waiting = {w for w in (read, windows[0].check if windows else None) if w is not None}
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if read is None or not read.done():
                        continue
                    (events, last), read = read.result(), None
                for event in events:
                    current.events.append(event)
                    text = text_of(event)
                    if text:
                        current.text.append(text)
                        current.size += len(text)
                        if SENTENCE_END.search(text) or current.size >= self.hold_back:
                            current = self._close(current, windows)
                if last:
                    ended = True
                    if current.text:
                        current = self._close(current, windows)
                    elif current.events and windows:  # it follows text still being checked: it waits for it
                        windows.append(current)
                        current = _Window()
                elif not windows and current.events and not current.text:
                    yield current.events, False  # no text held: nothing to wait for
                    current = _Window()
        finally:
            if read is not None:
                read.cancel()
                await asyncio.gather(read, return_exceptions=True)
            for window in windows:
                if window.check is not None and not window.check.cancel():
                    window.check.exception()  # checked after the end: its outcome no longer matters
            await source.aclose()

    def _close(self, window: _Window, windows: deque[_Window]) -> _Window:
        window.check = asyncio.ensure_future(self._check("".join(window.text)))
        windows.append(window)
        return _Window()

    async def _check(self, text: str) -> str | None:
        """The guard that refuses `text` (a block), or None; a failure follows each guard's on_error."""
        results = await asyncio.gather(
            *(self.safety.harmful(guard, text) for guard in self.guards), return_exceptions=True
        )
        for guard, result in zip(self.guards, results, strict=True):
            if isinstance(result, ServiceFailed):
                self.failed(guard)
                why = "guard %s: Azure AI Content Safety failed (%s); on_error = %s"
                log.warning(why, guard.name, result, guard.on_error)
                if guard.on_error == "closed":
                    raise GuardUnavailable()
            elif isinstance(result, BaseException):
                raise result
            elif result:
                self.acted(guard)
                if guard.action == "block":
                    return guard.name
        return None

    def _verdict(self, window: _Window) -> Event | None:
        """The event that ends the reply at this window, or None: it goes out."""
        if window.check is None:
            return None
        try:
            refused = window.check.result()
        except GuardUnavailable as failure:
            self.failure = failure
            return Failed.of(failure)
        if refused is None:
            return None
        self.blocked = refused
        return Done("content_filter", None, [refused])
