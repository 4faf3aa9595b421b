"""A client that leaves before its reply starts: the work waiting on its behalf (admission, the upstream's first
token, which a reasoning model may take a minute to send) is cancelled, and what it held is given back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

from chatsse.errors import ClientLeft

T = TypeVar("T")
# Most replies have their first token sooner: only then does a task watch the connection (a task per request
# costs a short reply about a tenth of its CPU). A client gone sooner holds its slot until then, at most.
WATCH_AFTER_SECONDS = 0.25


class _Watch:
    """Waits for the request's disconnect, and cancels the task awaiting the work if it comes first."""

    def __init__(self, receive: Receive, waiting: asyncio.Task[object]) -> None:
        self.receive = receive
        self.waiting = waiting
        self.done = False  # the work is over: set in the same step as its end, so no cancel can come after it
        self.left = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        # A GET's empty body may still be waiting to be received: only a disconnect ends the watch.
        while (await self.receive())["type"] != "http.disconnect":
            pass
        if not self.done:
            self.left = True
            self.waiting.cancel()  # lands inside the work, which cleans up as for any cancellation


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T:
    """`work`'s result; if the client disconnects first, `work` is cancelled (its cleanup runs) and ClientLeft is
    raised. `receive` is the request's, after its body was read."""
    waiting = asyncio.current_task()
    assert waiting is not None
    watch = _Watch(receive, waiting)
    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_SECONDS, watch.start)
    try:
        result = await work
        watch.done = True
        return result
    except asyncio.CancelledError:
        if watch.left:
            waiting.uncancel()  # ours, not the server's: the request ends with 499, not a cancellation
            raise ClientLeft() from None
        raise
    finally:
        watch.done = True
        timer.cancel()
        if watch.task is not None:
            watch.task.cancel()
