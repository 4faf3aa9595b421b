"""A client that leaves before its reply starts: the work waiting on its behalf (admission, the upstream's first
token, which a reasoning model may take a minute to send) is cancelled at once, and what it held is given back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

from chatsse.errors import ClientLeft

T = TypeVar("T")


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T:
    """`work`'s result; if the client disconnects first, `work` is cancelled (its cleanup runs to its end) and
    ClientLeft is raised. `receive` is the request's, after its body was read."""
    task = asyncio.ensure_future(work)  # a copy of this context: the caller, the request's record and span
    watch = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientLeft()
    return task.result()


async def _disconnect(receive: Receive) -> None:
    # A GET's empty body may still be waiting to be received: only a disconnect ends the watch.
    while (await receive())["type"] != "http.disconnect":
        pass
