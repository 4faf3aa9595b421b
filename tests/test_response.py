"""The streaming response: heartbeats on silent streams, and what an open stream costs in tasks (#12)."""

from __future__ import annotations

import asyncio
import json
import re

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import GatewayFactory
from tests.helpers import STREAM, chat, kinds, text_of
from tests.servers import RunningServer, wait_until

pytestmark = pytest.mark.anyio


OPEN = 20


def server_tasks(gateway: RunningServer) -> int:
    """Every asyncio task on the gateway's event loop, counted on that loop."""

    async def count() -> int:
        return len(asyncio.all_tasks())

    loop = gateway.server.servers[0].get_loop()
    return asyncio.run_coroutine_threadsafe(count(), loop).result(5)


async def test_heartbeat_comments_keep_a_silent_stream_alive(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(ping_seconds=0.3, upstream_timeout=5)
    async with httpx.AsyncClient() as client:
        payload = {"message": "echo:before after[sim: silence_after=1 silence=1.5]"}
        async with client.stream("POST", gateway.url + STREAM, json=payload) as response:
            body = b"".join([chunk async for chunk in response.aiter_bytes()]).decode()
    pings = re.findall(r"^: ping", body, re.M)
    assert len(pings) >= 3  # 1.5 s of upstream silence, a ping every 0.3 s
    assert body.index(": ping") > body.index('"content":"before"')
    events = [json.loads(block[6:]) for block in body.split("\n\n") if block.startswith("data: ")]
    assert text_of(events) == "before after" and kinds(events)[-1] == "done"


async def test_a_slow_first_token_starts_the_stream_with_heartbeats(make_gateway: GatewayFactory) -> None:
    """Routers give up on a response with no first byte (Heroku: 30 s), so a slow model's stream starts anyway."""
    gateway = make_gateway(ping_seconds=0.3, upstream_timeout=5)
    async with httpx.AsyncClient() as client:
        payload = {"message": "echo:thought hard[sim: first_delay=1.2]"}
        async with client.stream("POST", gateway.url + STREAM, json=payload) as response:
            assert response.status_code == 200
            body = b"".join([chunk async for chunk in response.aiter_bytes()]).decode()
        before_text = body[: body.index('"content":"thought"')]
        assert body.startswith(": ping") and before_text.count(": ping") >= 2  # 1.2 s of thinking, pings at 0.3 s
        events = [json.loads(block[6:]) for block in body.split("\n\n") if block.startswith("data: ")]
        assert text_of(events) == "thought hard" and kinds(events)[-1] == "done"

        # Once started, a failure before any text can only be an error event.
        payload = {"message": "echo:never[sim: first_delay=0.8 cut_after=0]"}
        response, events = await chat(client, gateway.url, payload)
    assert response.status_code == 200
    assert kinds(events) == ["error"] and events[0]["error"]["code"] == "upstream_disconnected"


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
