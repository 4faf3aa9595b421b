"""Upstream failures through a real gateway: before the first delta an HTTP error, after it a final error event."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from httpx_sse import aconnect_sse

from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM, chat, kinds, text_of
from tests.servers import RunningServer, free_port, wait_until

pytestmark = pytest.mark.anyio


def error_of(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"] == "application/json"
    error: dict[str, str] = response.json()["error"]
    return error


@pytest.mark.parametrize(
    ("directive", "status", "code"),
    [
        ("status=400", 400, "content_filter"),
        ("status=401", 502, "upstream_auth_failed"),
        ("status=403", 502, "upstream_auth_failed"),
        ("status=404", 502, "upstream_not_found"),
    ],
)
async def test_upstream_refusal_becomes_an_http_error(
    gateway: RunningServer, simulator: Simulator, directive: str, status: int, code: str
) -> None:
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"message": f"hi [sim: {directive}]"})
    assert (response.status_code, error_of(response)["code"]) == (status, code)
    assert events == []
    assert len(simulator.requests) == 1  # not retried


async def test_wrong_key_and_wrong_deployment_say_what_to_fix(make_gateway: GatewayFactory) -> None:
    async with httpx.AsyncClient() as client:
        bad_key = make_gateway(api_key="sk-wrong-key-1234567890")
        response, _ = await chat(client, bad_key.url, {"message": "hi"})
        assert response.status_code == 502
        assert "AZURE_OPENAI_API_KEY" in error_of(response)["message"]
        assert "sk-wrong-key" not in response.text

        bad_deployment = make_gateway(deployment="no-such-deployment")
        response, _ = await chat(client, bad_deployment.url, {"message": "hi"})
        assert response.status_code == 502
        assert error_of(response)["code"] == "upstream_not_found"
        assert "AZURE_OPENAI_DEPLOYMENT_NAME" in error_of(response)["message"]


async def test_429_is_retried_honouring_retry_after_ms(gateway: RunningServer, simulator: Simulator) -> None:
    async with httpx.AsyncClient() as client:
        response, events = await chat(
            client, gateway.url, {"message": "echo:made it[sim: status=429 times=2 retry_after_ms=300]"}
        )
    assert response.status_code == 200 and text_of(events) == "made it"
    assert len(simulator.requests) == 3
    gaps = [b.received_at - a.received_at for a, b in zip(simulator.requests, simulator.requests[1:], strict=False)]
    assert all(gap >= 0.29 for gap in gaps), gaps  # it waited as asked, not its own (shorter) backoff


async def test_429_that_persists_is_passed_on_with_retry_after(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway(max_retries=2)
    async with httpx.AsyncClient() as client:
        response, _ = await chat(client, gateway.url, {"message": "hi [sim: status=429 retry_after_ms=20]"})
    assert response.status_code == 429
    assert error_of(response)["code"] == "rate_limited"
    assert response.headers["retry-after"] == "1"
    assert len(simulator.requests) == 3


async def test_429_asking_for_a_long_wait_fails_fast(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(max_retry_wait=5)
    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        response, _ = await chat(client, gateway.url, {"message": "hi [sim: status=429 retry_after=33]"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "33"
    assert len(simulator.requests) == 1
    assert time.monotonic() - started < 4  # safety net: it did not sit out the 33 s


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried_then_502(gateway: RunningServer, simulator: Simulator, status: int) -> None:
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"message": f"echo:ok[sim: status={status} times=1]"})
        assert response.status_code == 200 and text_of(events) == "ok"
        assert len(simulator.requests) == 2

        response, _ = await chat(client, gateway.url, {"message": f"hi [sim: status={status}]"})
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_unavailable"
    assert len(simulator.requests) == 2 + 3


async def test_connection_dropped_without_an_answer_is_retried(gateway: RunningServer, simulator: Simulator) -> None:
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"message": "echo:second time lucky[sim: drop=1 times=1]"})
        assert response.status_code == 200 and text_of(events) == "second time lucky"
        assert len(simulator.requests) == 2

        response, _ = await chat(client, gateway.url, {"message": "hi [sim: drop=1]"})
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_unavailable"
    assert len(simulator.requests) == 2 + 3


async def test_no_retries_when_max_retries_is_zero(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(max_retries=0)
    async with httpx.AsyncClient() as client:
        response, _ = await chat(client, gateway.url, {"message": "hi [sim: status=503 times=1]"})
    assert response.status_code == 502
    assert len(simulator.requests) == 1


async def test_unreachable_upstream_is_502(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(endpoint=f"http://127.0.0.1:{free_port()}", max_retries=1)
    async with httpx.AsyncClient() as client:
        response, _ = await chat(client, gateway.url, {"message": "hi"})
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_unreachable"
    assert "127.0.0.1" not in response.text  # httpx's text (with the upstream URL) is not echoed


async def test_upstream_silent_before_first_token_is_504(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(upstream_timeout=0.5)
    async with httpx.AsyncClient() as client:
        response, _ = await chat(client, gateway.url, {"message": "hi [sim: first_delay=3]"})
    assert response.status_code == 504
    assert error_of(response)["code"] == "upstream_timeout"
    assert len(simulator.requests) == 1


async def test_stream_cut_before_first_token_is_502(gateway: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        response, _ = await chat(client, gateway.url, {"message": "hi [sim: cut_after=0]"})
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_disconnected"


@pytest.mark.parametrize(
    ("directive", "code"),
    [
        ("cut_after=3", "upstream_disconnected"),
        ("cut_after=3 split=4", "upstream_disconnected"),
        ("malformed_after=3", "upstream_malformed"),
        ("error_after=3", "upstream_error"),
        ("no_done=1", "upstream_disconnected"),
    ],
)
async def test_failure_mid_stream_ends_with_one_error_event(gateway: RunningServer, directive: str, code: str) -> None:
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"message": f"echo:one two three four[sim: {directive}]"})
    assert response.status_code == 200
    expected_content = 4 if directive.startswith("no_done") else 3
    assert kinds(events) == ["content"] * expected_content + ["error"]
    assert events[-1]["error"]["code"] == code
    assert len(events[-1]["error"]["message"]) > 10


async def test_silence_mid_stream_ends_with_a_timeout_event(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(upstream_timeout=0.5)
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"message": "echo:a b c[sim: silence_after=2]"})
    assert response.status_code == 200
    assert kinds(events) == ["content", "content", "error"]
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert wait_until(lambda: simulator.requests[-1].peer_closed_at is not None)


async def test_client_disconnect_closes_the_upstream_within_a_second(
    gateway: RunningServer, simulator: Simulator
) -> None:
    for directive in ("hold_after=1 hold=never", "silence_after=1", "delay=0.05"):
        async with httpx.AsyncClient() as client:
            payload = {"message": f"echo:{'word ' * 100}[sim: {directive}]"}
            async with aconnect_sse(client, "POST", gateway.url + STREAM, json=payload) as source:
                first = await anext(source.aiter_sse())
                assert json.loads(first.data) == {"content": "word"}
            closed_at = time.monotonic()
        upstream = simulator.requests[-1]
        assert wait_until(lambda upstream=upstream: upstream.peer_closed_at is not None, timeout=5), directive
        assert upstream.peer_closed_at is not None and upstream.finished_at is None
        assert upstream.peer_closed_at - closed_at < 1.0, directive
    # Nothing is left behind: no request task in the gateway, no connection at the simulator.
    assert wait_until(lambda: gateway.open_tasks() == 0)
    assert wait_until(lambda: simulator.open_connections == 0)
