"""Seeing what happens, through a real server: request ids, one log line per request, metrics."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest
from httpx_sse import aconnect_sse

from chatsse.simulator import Simulator
from tests.conftest import API_KEY, GatewayFactory
from tests.helpers import STREAM, chat, metric
from tests.servers import RunningServer, wait_until

pytestmark = pytest.mark.anyio

CALLER_KEY = "caller-key-7c1d9e"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "chatsse.access"]


async def test_request_id_is_generated_or_taken_from_the_client(gateway: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        generated = await client.get(gateway.url + "/health")
        assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
        given = await client.get(gateway.url + "/health", headers={"x-request-id": "client-abc.123"})
        assert given.headers["x-request-id"] == "client-abc.123"
        for bad in ("has space", "x" * 200, 'quote"d'):
            replaced = await client.get(gateway.url + "/health", headers={"x-request-id": bad})
            assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
        headers = {"content-type": "application/json", "x-request-id": "req-400"}
        refused = await client.post(gateway.url + STREAM, content=b"{", headers=headers)
        assert refused.headers["x-request-id"] == "req-400"
        assert refused.json()["error"]["request_id"] == "req-400"
        async with aconnect_sse(
            client,
            "POST",
            gateway.url + STREAM,
            json={"message": "echo:a b[sim: cut_after=1]"},
            headers={"x-request-id": "req-cut"},
        ) as source:
            assert source.response.headers["x-request-id"] == "req-cut"
            events = [json.loads(e.data) async for e in source.aiter_sse()]
    assert events[-1]["error"]["request_id"] == "req-cut"


async def test_one_json_log_line_per_request_without_content_or_secrets(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatsse.access")
    gateway = make_gateway(log_format="json", api_keys=(CALLER_KEY,))
    auth = {"authorization": f"Bearer {CALLER_KEY}"}
    async with httpx.AsyncClient(headers=auth) as client:
        await chat(client, gateway.url, {"message": "echo:the secret plan is xyzzy"})
        await chat(client, gateway.url, {"message": "echo:ok[sim: status=429 times=2 retry_after_ms=10]"})
        await client.get(gateway.url + STREAM, params={"message": "echo:hi", "access_token": CALLER_KEY})
        async with aconnect_sse(
            client, "POST", gateway.url + STREAM, json={"message": "echo:a b c[sim: delay=0.2]"}
        ) as s:
            await anext(s.aiter_sse())
    assert wait_until(lambda: len(access_lines(caplog)) == 4)
    first, retried, eventsource, left = access_lines(caplog)
    assert first["route"] == "/api/v1/chat/stream" and first["status"] == 200 and first["method"] == "POST"
    assert first["upstream_status"] == 200 and first["finish_reason"] == "stop" and first["content_chunks"] == 5
    ttft, duration = first["ttft_ms"], first["duration_ms"]
    assert isinstance(ttft, float) and isinstance(duration, float) and duration >= ttft
    assert str(first["caller"]).startswith("key:") and first["client_disconnected"] is False
    assert re.fullmatch(r"[0-9a-f]{32}", str(first["request_id"]))
    assert retried["retries"] == 2 and retried["status"] == 200
    assert eventsource["method"] == "GET" and eventsource["caller"] == first["caller"]
    assert left["client_disconnected"] is True
    assert "xyzzy" not in caplog.text and CALLER_KEY not in caplog.text and API_KEY not in caplog.text


async def test_metrics_count_requests_streams_errors_retries_and_disconnects(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway()

    async with httpx.AsyncClient() as client:
        await chat(client, gateway.url, {"message": "echo:one"})
        await chat(client, gateway.url, {"message": "echo:x[sim: status=503 times=1]"})
        await chat(client, gateway.url, {"message": "hi [sim: status=500]"})
        payload = {"message": "echo:held open[sim: hold_after=1 hold=metrics]"}
        async with aconnect_sse(client, "POST", gateway.url + STREAM, json=payload) as source:
            events = source.aiter_sse()  # held in a name: a dropped iterator is finalized, closing the stream
            await anext(events)
            during = (await client.get(gateway.url + "/metrics")).text
        # The gateway saw the client go (it closed the upstream) before the rest is released: else, on a busy
        # machine, the reply could finish before the disconnect is noticed.
        assert wait_until(lambda: simulator.requests[-1].peer_closed_at is not None, timeout=30)  # a safety net
        simulator.release("metrics")
        assert wait_until(lambda: gateway.open_tasks() == 0)
        after = (await client.get(gateway.url + "/metrics")).text
    assert metric(during, "chatsse_active_streams") == 1
    assert metric(after, "chatsse_active_streams") == 0
    assert metric(after, 'chatsse_requests_total{route="/api/v1/chat/stream",status="200"}') == 3
    assert metric(after, 'chatsse_requests_total{route="/api/v1/chat/stream",status="502"}') == 1
    assert metric(after, 'chatsse_upstream_errors_total{code="upstream_unavailable"}') == 1
    assert metric(after, "chatsse_upstream_retries_total") == 1 + 2
    assert metric(after, "chatsse_client_disconnects_total") == 1
    assert metric(after, "chatsse_time_to_first_token_seconds_count") == 3
