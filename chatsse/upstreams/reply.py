"""An upstream reply being read: SSE bytes in, our typed events out, from the first token to done or a failure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Protocol

import httpx

from chatsse.chunks import ChunkTranslator
from chatsse.errors import ChatSSEError, ServerShutdown
from chatsse.events import Annotation, Batch, Done, Event, Failed
from chatsse.record import current_record
from chatsse.sse import SSEDecoder
from chatsse.tracing import NO_ATTEMPT, AttemptSpan, Outcome
from chatsse.upstreams.failures import from_transport_error

log = logging.getLogger("chatsse.upstream")

Step = tuple[list[Event], bool]  # the events of one upstream read, and whether they are the reply's last


class Watch(Protocol):
    """What the reply needs of an asynchronous output check (guards/watch.py's Content Safety watch)."""

    blocked: str | None  # the guard that ended the reply
    failure: ChatSSEError | None  # a check that could not be made ended it

    def run(self, source: AsyncGenerator[Step, None]) -> AsyncGenerator[Step, None]: ...


class UpstreamReply:
    """An upstream reply that has produced its first content (or ended); `events()` relays the rest."""

    def __init__(self, response: httpx.Response, upstream: str, translator: ChunkTranslator | None = None) -> None:
        self.response = response
        self.upstream = upstream  # the name of the upstream that serves it
        self.translator = translator or ChunkTranslator()  # chat completions' chunks, or Responses events
        self._decoder = SSEDecoder()
        # Raw, without httpx's decoder and re-chunker (fewer layers per chunk and per open stream), unless the
        # upstream encoded the body though asked not to.
        encoded = response.headers.get("content-encoding", "identity") != "identity"
        self._reads = response.aiter_bytes() if encoded else response.aiter_raw()
        self._first: list[Event] = []
        self._shutting_down = False
        self._stopped = False
        self._pending: asyncio.Future[bytes] | None = None
        self.on_end: Callable[[], Awaitable[None]] | None = None  # once, when the reply has ended, however it ended
        # When the caller stops it: what else ends it upstream (a background response goes on after its stream closes)
        self.on_stop: Callable[[], Awaitable[None]] | None = None
        self.trace: AttemptSpan = NO_ATTEMPT  # the span of the attempt that produced it
        self.began = time.monotonic()  # when its attempt began (the failover sets it to before the request)
        self._first_token_seen = False
        # The output guards (guards/stream.py's Screen): each batch through them; a block ends the reply.
        self.screen: Callable[[list[Event], bool], list[Event]] | None = None
        self.watch: Watch | None = None  # the Content Safety guards on output (guards/watch.py), before the screen

    async def read_until_first_content(self, patience: float = 0) -> None:
        """Read until there is something to send; a failure before that is raised, to become an HTTP error.

        After `patience` seconds (0: no limit) with no content yet, return anyway: the stream starts and its
        heartbeats flow, because PaaS routers give up on a response whose first byte is late (Heroku: 30 s)
        and slow models can think for longer. The read under way carries on in `events()`."""
        deadline = time.monotonic() + patience if patience else None
        while not self._has_content() and not self.translator.over:
            try:
                if deadline is None:  # no heartbeats: read directly, without a task per read
                    raw = await anext(self._reads)
                else:
                    if self._pending is None:
                        self._pending = asyncio.ensure_future(anext(self._reads))
                    done, _ = await asyncio.wait({self._pending}, timeout=max(0.0, deadline - time.monotonic()))
                    if not done:
                        return
                    pending, self._pending = self._pending, None
                    raw = pending.result()
            except StopAsyncIteration:
                self.translator.end_of_stream()
                break
            except httpx.HTTPError as exc:
                raise from_transport_error(exc) from None
            self._first += self.translator.feed(self._decoder.decode(raw))
        if not self._has_content() and self.translator.failure is not None:
            raise self.translator.failure
        self._note_first_token()

    def _has_content(self) -> bool:
        """Something of the reply itself: the prompt's filter results alone are not its start (nor a reason not to
        fail over)."""
        return any(event.__class__ is not Annotation for event in self._first)

    def _note_first_token(self) -> None:
        if self._first_token_seen or not self.translator.content_events:
            return
        self._first_token_seen = True
        record = current_record.get()
        if record is not None:
            record.first_token()
        self.trace.first_token()

    async def _reads_after_early_start(self) -> AsyncIterator[bytes]:
        """The upstream reads when the stream started before any content: the read under way, then the rest."""
        assert self._pending is not None
        pending, self._pending = self._pending, None
        try:
            yield await pending
        except StopAsyncIteration:
            return
        self._note_first_token()
        async for raw in self._reads:
            yield raw
            self._note_first_token()

    async def events(self) -> AsyncIterator[Batch]:
        """Our events, one batch per upstream read, ending in a done event or a failed one; through the output
        guards, if any: the Content Safety watch, then the screen (what a guard blocks ends the reply)."""
        translator, screen, watch = self.translator, self.screen, self.watch
        source = self._translated() if watch is None else watch.run(self._translated())
        try:
            async for out, final in source:
                if screen is not None:
                    out = screen(out, final)
                blocked = self._blocked()
                if self.trace.capture:  # what the client gets (checked by the guards), never what they held back
                    self.trace.output(out)
                if final or blocked:
                    if blocked:  # a guard ended it (its done goes out): the upstream is closed, its tokens charged
                        translator.failure, translator.finish_reason, translator.done = None, "content_filter", True
                    elif watch is not None and watch.failure is not None:
                        translator.failure = watch.failure
                    await self.end()  # before the last event goes out: whoever sees it sees the reply settled
                if out:
                    yield Batch(out)
                if final or blocked:
                    break
        finally:
            await source.aclose()
            record = current_record.get()
            if record is not None:
                record.content_chunks = translator.content_events
                record.finish_reason = translator.finish_reason
            await self.response.aclose()
            await self.end()  # cut short: a client left, the window passed, the server stopped

    async def _translated(self) -> AsyncGenerator[Step, None]:
        """The translator's events, one list per upstream read, the last flagged (with how the reply ended)."""
        translator = self.translator
        out = self._first
        if not translator.over:
            yield out, False
            out = []
            try:
                reads = self._reads if self._pending is None else self._reads_after_early_start()
                async for raw in reads:
                    out = translator.feed(self._decoder.decode(raw))
                    if translator.over:
                        break
                    yield out, False
                    out = []
                else:
                    translator.end_of_stream()
            except httpx.HTTPError as exc:
                translator.failure = from_transport_error(exc)
        if self._stopped and not translator.done:
            translator.failure, translator.finish_reason = None, "stopped"
            out.append(Done("stopped"))  # the caller asked for it: a reply that ends, not one that broke
        elif self._shutting_down and not translator.done:
            translator.failure = ServerShutdown()
        if translator.failure is not None:
            log.warning("upstream failed mid-stream: %s", translator.failure.code)
            out.append(Failed.of(translator.failure))
        yield out, True

    def _blocked(self) -> bool:
        return getattr(self.screen, "blocked", None) is not None or (
            self.watch is not None and self.watch.blocked is not None
        )

    async def end(self) -> None:
        """End the attempt's span and run `on_end`, if they have not run yet."""
        translator = self.translator
        failure = translator.failure
        self.trace.finished(
            Outcome(
                translator.response_model,
                translator.response_id,
                translator.finish_reason,
                translator.usage,
                failure.code if failure is not None else None,
            )
        )
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            await on_end()

    async def aclose(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        await self.response.aclose()

    async def stop(self) -> None:
        """End this reply now, at the caller's request: the reader sees the upstream close and sends done."""
        self._stopped = True
        on_stop, self.on_stop = self.on_stop, None
        if on_stop is not None:
            try:
                await on_stop()
            except Exception as exc:  # the stream ends here all the same
                log.warning(
                    "upstream %s: ending the stopped reply there failed (%s)", self.upstream, type(exc).__name__
                )
        await self.response.aclose()

    async def shut_down(self) -> None:
        """End this stream now (server drain): the reader sees the upstream close and sends server_shutdown."""
        self._shutting_down = True
        await self.response.aclose()
