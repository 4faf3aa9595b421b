"""The response that streams a reply: sse-starlette's EventSourceResponse with one task per stream instead of four,
writing each batch of typed events once, framed by the face that answers; and `Direct`, the endpoint of the routes
that answer with one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime

import anyio
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from chatsse.events import Batch

# Every stream's headers: never cached, and not buffered by nginx (sse-starlette adds the same; ours win).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
Frame = Callable[[Batch], bytes]  # a face's encoding of one batch, written to the client at once


class RelayResponse(EventSourceResponse):
    """sse-starlette runs each response in a task group of four tasks (events, pings, the shutdown watch and the
    disconnect watch), with a lock around every send and a cancel scope around every event when a send timeout
    is set. With thousands of open streams that was most of a stream's anyio cost and a good part of its memory
    (bench/REPORT.md, at scale). Here the events go out from the request's own task, and one watcher task waits
    for the disconnect and sends a ping every interval. No lock is needed: each send is one whole event,
    written at once, and pings stop before the final message. Server shutdown is ours to handle: the drain
    (lifecycle.py) ends every stream before uvicorn is told to exit. HEAD and a send timeout keep the parent's
    behaviour."""

    def __init__(
        self,
        events: AsyncIterator[Batch],
        frame: Frame,
        headers: Mapping[str, str],
        ping: float,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(events, headers=headers, ping=ping, sep="\n", background=background)
        self.events = events
        self.frame = frame
        self.sending = False  # the start went out and the final message has not: a ping may go

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD" or self.send_timeout is not None:
            self.body_iterator = self._framed()  # made only here: it refers back to this response
            await super().__call__(scope, receive, send)
            return
        with anyio.CancelScope() as cancel:
            watcher = asyncio.get_running_loop().create_task(self._watch(receive, send, cancel))
            try:
                await self._relay(send)
            finally:
                self.sending = False
                watcher.cancel()
        if self.background is not None:
            await self.background()

    async def _relay(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        self.sending = True
        try:
            async for batch in self.events:
                body = self.frame(batch)
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            # A disconnect can land while the generator waits at a yield; close it so its cleanup runs now.
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
        self.sending = False
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch(self, receive: Receive, send: Send, cancel: anyio.CancelScope) -> None:
        """Cancel the relay when the client goes; between its messages, a ping every interval."""
        interval = self.ping_interval or None
        while True:
            message: Message | None = None
            if interval is None:
                message = await receive()
            else:
                # asyncio's own timeout: anyio's scope kept a scope and a task state (with its weak reference)
                # for every open stream's watcher, for the collector to walk.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        message = await receive()
            if message is None:
                if self.sending:
                    try:
                        await send({"type": "http.response.body", "body": _ping(), "more_body": True})
                    except RuntimeError:
                        # The final message went out while this ping waited for the socket to drain, and uvicorn
                        # refuses a body after it: the stream is over, and so is the watching.
                        return
            elif message["type"] == "http.disconnect":
                cancel.cancel()
                return

    async def _framed(self) -> AsyncIterator[bytes]:
        """The framed bytes, for the parent's way of sending (HEAD, or a send timeout)."""
        async for batch in self.events:
            yield self.frame(batch)


def _ping() -> bytes:
    return f": ping - {datetime.now(UTC)}\n\n".encode()


class Direct:
    """A route's endpoint as a plain ASGI app: the request built, the handler awaited, its response sent.

    Starlette wraps a function endpoint in a handler of its own exceptions whose every message passes through one
    more send; the app's ExceptionMiddleware catches the same exceptions with the same handlers, so for the routes
    that stream (each message a chunk, each object held for the whole stream) that layer is dropped: nine objects
    per open stream and a coroutine per chunk (bench/REPORT.md, "Under overload (#35, its third part)")."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)
