"""What an open stream costs the server in tasks: its request's task and one watcher, both gone when it ends (#12)."""

from __future__ import annotations

import asyncio
import json

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import GatewayFactory
from tests.helpers import STREAM
from tests.servers import RunningServer, wait_until

pytestmark = pytest.mark.anyio
OPEN = 20


def server_tasks(gateway: RunningServer) -> int:
    """Every asyncio task on the gateway's event loop, counted on that loop."""

    async def count() -> int:
        return len(asyncio.all_tasks())

    loop = gateway.server.servers[0].get_loop()
    return asyncio.run_coroutine_threadsafe(count(), loop).result(5)


async def test_an_open_stream_costs_two_tasks_and_pings_still_flow(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(ping_seconds=0.2)
    idle = server_tasks(gateway)
    payload = {"message": f"echo:{'word ' * 20}[sim: hold_after=1 hold=never]"}
    async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as group:
        opened = anyio.Event()
        pinged = anyio.Event()
        started = 0

        async def one() -> None:
            nonlocal started
            async with aconnect_sse(client, "POST", gateway.url + STREAM, json=payload) as source:
                lines = source.response.aiter_lines()
                async for line in lines:
                    if line.startswith("data:"):
                        assert json.loads(line[5:]) == {"content": "word"}
                        break
                started += 1
                if started == OPEN:
                    opened.set()
                async for line in lines:  # the upstream holds the rest: only pings arrive
                    if line.startswith(": ping"):
                        pinged.set()
                        await anyio.sleep_forever()

        for _ in range(OPEN):
            group.start_soon(one)
        with anyio.fail_after(10):
            await opened.wait()
            await pinged.wait()
        during = server_tasks(gateway)
        group.cancel_scope.cancel()
    # sse-starlette's own response ran four tasks per stream beside the request's (events, pings, shutdown,
    # disconnect): five in all. Ours runs the events in the request's task and one watcher.
    assert during - idle == 2 * OPEN
    assert wait_until(lambda: gateway.open_tasks() == 0)
    assert wait_until(lambda: server_tasks(gateway) == idle)
