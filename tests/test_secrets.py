"""The Azure key never reaches a client or a log line, whatever fails."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.conftest import API_KEY, GatewayFactory
from tests.helpers import STREAM
from tests.servers import free_port

pytestmark = pytest.mark.anyio

WRONG_KEY = "sk-wrong-SECRET-77aa31"
SCENARIOS = [
    "echo:fine",
    "hi [sim: status=400]",
    "hi [sim: status=403]",
    "hi [sim: status=429 retry_after_ms=10]",
    "hi [sim: status=500]",
    "echo:a b c[sim: cut_after=1]",
    "echo:a b c[sim: malformed_after=1]",
    "echo:a b c[sim: error_after=1]",
    "echo:a b c[sim: silence_after=1]",
]


async def test_key_is_never_in_responses_events_or_logs(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateways = [
        make_gateway(upstream_timeout=0.3),
        make_gateway(api_key=WRONG_KEY),
        make_gateway(api_key=WRONG_KEY, endpoint=f"http://127.0.0.1:{free_port()}", max_retries=0),
    ]
    seen: list[str] = []
    async with httpx.AsyncClient() as client:
        for gateway in gateways:
            for message in SCENARIOS:
                response = await client.post(gateway.url + STREAM, json={"message": message})
                seen.append(f"{response.status_code} {response.headers} {response.text}")
            seen.append((await client.get(gateway.url + "/health")).text)
    everything = "\n".join(seen)
    assert "rate_limited" in everything and "upstream_auth_failed" in everything and "upstream_timeout" in everything
    assert "upstream_unreachable" in everything and "upstream_malformed" in everything
    assert caplog.records, "the gateway logged nothing at all: this test would prove nothing"
    for secret in (API_KEY, WRONG_KEY):
        assert secret not in everything
        assert secret not in caplog.text
        assert all(secret not in str(record.args) for record in caplog.records)
