"""The test-only hooks, routed with CHATSSE_TEST_HOOKS=true only: a loop blocked (or a core burned) on purpose, and
the objects the cyclic collector tracks, so that tests can watch shedding and bound what an open stream holds."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


async def stall(request: Request) -> Response:
    """`POST /_test/stall?ms=N&seconds=S[&burn=true]`: block the event loop N ms at a time for S seconds, as a
    saturated core would, so that tests can watch shedding start and end; with `burn`, by spinning (the loop's
    thread then uses a whole core, as it does under real overload) instead of sleeping."""
    block, seconds = (
        float(request.query_params.get("ms", "300")) / 1000,
        float(request.query_params.get("seconds", "2")),
    )
    burn = request.query_params.get("burn") == "true"

    async def stalls() -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if burn:
                spun_until = time.thread_time() + block
                while time.thread_time() < spun_until:
                    pass
            else:
                time.sleep(block)  # on purpose: the loop can do nothing else meanwhile
            await asyncio.sleep(0.01)

    request.app.state.stall = asyncio.get_running_loop().create_task(stalls())
    return JSONResponse({"stalling_ms": block * 1000, "for_seconds": seconds}, status_code=202)


async def tracked_objects(request: Request) -> Response:
    """`GET /_test/objects`: after a full collection, how many objects the cyclic
    collector tracks (those frozen at start-up not counted), so that tests can bound what an open stream holds."""
    gc.collect()
    tracked = gc.get_objects()
    body: dict[str, object] = {"tracked": len(tracked), "threshold": gc.get_threshold()}
    if request.query_params.get("by") == "type":  # and how many of each type, for finding what a stream holds
        counted = Counter(type(obj).__qualname__ for obj in tracked)
        body["by_type"] = dict(counted.most_common())
    return JSONResponse(body)
