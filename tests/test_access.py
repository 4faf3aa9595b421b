"""Who may call and how much, through a real server: caller keys, the rate limit, bounds on bodies and headers,
and the client address behind a trusted proxy."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from chatsse.server.access import key_id
from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM, chat, text_of
from tests.servers import chatsse_serve

pytestmark = pytest.mark.anyio

CALLER_KEY = "caller-key-7c1d9e"
OTHER_KEY = "caller-key-other-22"


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


def test_forwarded_address_is_trusted_only_when_configured(tmp_path: Path) -> None:
    simulator = Simulator()
    simulator.start_in_thread()
    body = {"message": "echo:x"}
    try:
        for trusted, expected in (("", [200, 429]), ("127.0.0.1", [200, 200])):
            with chatsse_serve(
                tmp_path, simulator.url, env={"CHATSSE_RATE_LIMIT": "1/minute", "CHATSSE_TRUSTED_PROXIES": trusted}
            ) as gateway:
                url = gateway.url
                statuses = [
                    httpx.post(url + "/api/v1/chat/stream", json=body, headers={"x-forwarded-for": ip}).status_code
                    for ip in ("203.0.113.7", "203.0.113.8")
                ]
                stderr = gateway.stop()
            assert statuses == expected, trusted
            lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
            callers = [line["caller"] for line in lines if line["route"] == "/api/v1/chat/stream"]
            assert callers == (["ip:127.0.0.1"] * 2 if not trusted else ["ip:203.0.113.7", "ip:203.0.113.8"])
    finally:
        simulator.stop_thread()


def test_key_ids_are_stable_and_do_not_contain_the_key() -> None:
    assert key_id("secret-key") == key_id("secret-key") != key_id("other-key")
    assert "secret" not in key_id("secret-key") and key_id("secret-key").startswith("key:")
