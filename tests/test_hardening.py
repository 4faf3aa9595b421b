"""Production hardening through a real server: request ids, logs, metrics, caller keys, limits, heartbeats."""

from __future__ import annotations

import json
import logging
import re
import socket
import time

import httpx
import pytest
from httpx_sse import aconnect_sse

from chatsse.simulator import Simulator
from tests.conftest import API_KEY, GatewayFactory
from tests.helpers import STREAM, chat, kinds, text_of
from tests.servers import RunningServer, wait_until

pytestmark = pytest.mark.anyio

CALLER_KEY = "caller-key-7c1d9e"
OTHER_KEY = "caller-key-other-22"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "chatsse.access"]


# --- request ids -----------------------------------------------------------------------------------


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


# --- structured log ----------------------------------------------------------------------------------


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


# --- metrics -------------------------------------------------------------------------------------------


async def test_metrics_count_requests_streams_errors_retries_and_disconnects(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway()

    def metric(text: str, name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert found, name
        return float(found.group(1))

    async with httpx.AsyncClient() as client:
        await chat(client, gateway.url, {"message": "echo:one"})
        await chat(client, gateway.url, {"message": "echo:x[sim: status=503 times=1]"})
        await chat(client, gateway.url, {"message": "hi [sim: status=500]"})
        payload = {"message": "echo:held open[sim: hold_after=1 hold=metrics]"}
        async with aconnect_sse(client, "POST", gateway.url + STREAM, json=payload) as source:
            await anext(source.aiter_sse())
            during = (await client.get(gateway.url + "/metrics")).text
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


# --- caller keys ---------------------------------------------------------------------------------------


async def test_caller_keys_guard_the_api_but_not_health(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(api_keys=(CALLER_KEY, OTHER_KEY))
    async with httpx.AsyncClient() as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {CALLER_KEY}"}):
            response = await client.post(gateway.url + STREAM, json={"message": "hi"}, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert CALLER_KEY not in response.text
        assert (await client.get(gateway.url + "/metrics")).status_code == 401
        assert (await client.get(gateway.url + STREAM, params={"message": "hi"})).status_code == 401
        assert simulator.requests == []

        assert (await client.get(gateway.url + "/health")).status_code == 200
        for key in (CALLER_KEY, OTHER_KEY):
            async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}) as keyed:
                response, events = await chat(keyed, gateway.url, {"message": "echo:in"})
            assert response.status_code == 200 and text_of(events) == "in"
        eventsource = await client.get(gateway.url + STREAM, params={"message": "echo:es", "access_token": OTHER_KEY})
        assert eventsource.status_code == 200 and '"content":"es"' in eventsource.text
        metrics = await client.get(gateway.url + "/metrics", headers={"authorization": f"Bearer {CALLER_KEY}"})
        assert metrics.status_code == 200
        preflight = await client.options(
            gateway.url + STREAM,
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 200  # browsers send no credentials on preflight


# --- limits --------------------------------------------------------------------------------------------


async def test_rate_limit_per_caller(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(api_keys=(CALLER_KEY, OTHER_KEY), rate_limit=(3, 60.0))
    one = httpx.AsyncClient(headers={"authorization": f"Bearer {CALLER_KEY}"})
    other = httpx.AsyncClient(headers={"authorization": f"Bearer {OTHER_KEY}"})
    async with one, other:
        statuses = [(await one.post(gateway.url + STREAM, json={"message": "echo:x"})).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = await one.post(gateway.url + STREAM, json={"message": "echo:x"})
        assert limited.json()["error"]["code"] == "too_many_requests"
        assert 1 <= int(limited.headers["retry-after"]) <= 20
        assert (await other.post(gateway.url + STREAM, json={"message": "echo:x"})).status_code == 200
        assert (await one.get(gateway.url + "/health")).status_code == 200  # not rate-limited
    assert len(simulator.requests) == 4


async def test_stream_cap_refuses_at_once_with_retry_after(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(max_streams=2)
    async with httpx.AsyncClient() as client:
        holds = [{"message": f"echo:held {i}[sim: hold_after=1 hold=cap]"} for i in range(2)]
        async with (
            aconnect_sse(client, "POST", gateway.url + STREAM, json=holds[0]) as first,
            aconnect_sse(client, "POST", gateway.url + STREAM, json=holds[1]) as second,
        ):
            await anext(first.aiter_sse())
            await anext(second.aiter_sse())
            started = time.monotonic()
            refused = await client.post(gateway.url + STREAM, json={"message": "echo:third"})
            assert time.monotonic() - started < 2  # at once, not queued
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "too_many_streams"
            assert refused.headers["retry-after"] == "1"
            assert len(simulator.requests) == 2
            simulator.release("cap")
        assert wait_until(lambda: gateway.open_tasks() == 0)  # the two held streams have ended
        response, events = await chat(client, gateway.url, {"message": "echo:room again"})
    assert response.status_code == 200 and text_of(events) == "room again"


def test_slow_body_times_out_and_huge_headers_are_refused(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(body_timeout=0.5)
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/chat/stream HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"message":'
        )
        reply = sock.recv(4096)  # the rest of the body never comes
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply
    response = httpx.get(gateway.url + "/health", headers={"x-padding": "a" * 20_000})
    assert response.status_code == 431 and response.json()["error"]["code"] == "headers_too_large"


# --- heartbeats ----------------------------------------------------------------------------------------


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
