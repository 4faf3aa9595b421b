"""CORS through a real server: preflight for the POST, and the stream itself carries the allow-origin header."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.helpers import STREAM

pytestmark = pytest.mark.anyio

PREFLIGHT = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}


async def test_any_origin_by_default(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    async with httpx.AsyncClient() as client:
        preflight = await client.options(gateway.url + STREAM, headers={"origin": "https://app.example", **PREFLIGHT})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        response = await client.post(
            gateway.url + STREAM, json={"message": "echo:hi"}, headers={"origin": "https://app.example"}
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["access-control-allow-origin"] == "*"


async def test_only_configured_origins(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(cors_origins=("https://allowed.example",))
    async with httpx.AsyncClient() as client:
        allowed = {"origin": "https://allowed.example"}
        preflight = await client.options(gateway.url + STREAM, headers={**allowed, **PREFLIGHT})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://allowed.example"
        response = await client.post(gateway.url + STREAM, json={"message": "echo:hi"}, headers=allowed)
        assert response.headers["access-control-allow-origin"] == "https://allowed.example"

        other = {"origin": "https://evil.example"}
        preflight = await client.options(gateway.url + STREAM, headers={**other, **PREFLIGHT})
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers
        response = await client.post(gateway.url + STREAM, json={"message": "echo:hi"}, headers=other)
        assert "access-control-allow-origin" not in response.headers


async def test_error_responses_carry_cors_headers_too(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.url + STREAM,
            content=b"{",
            headers={"origin": "https://app.example", "content-type": "application/json"},
        )
    assert response.status_code == 400
    assert response.headers["access-control-allow-origin"] == "*"


async def test_a_post_without_an_origin_passes_by_cors_and_a_get_keeps_vary(make_gateway: GatewayFactory) -> None:
    # curl, the SDKs and agents send no Origin: their POSTs skip CORS (a POST's answer is never cached, so the
    # `Vary: Origin` it would add has no reader); a GET still gets it, for caches in front of the page and models.
    gateway = make_gateway(cors_origins=("https://allowed.example",))
    async with httpx.AsyncClient() as client:
        plain = await client.post(gateway.url + STREAM, json={"message": "echo:hi"})
        assert plain.status_code == 200 and "hi" in plain.text
        assert "access-control-allow-origin" not in plain.headers and "vary" not in plain.headers
        models = await client.get(gateway.url + "/v1/models")
        assert "Origin" in models.headers["vary"]
        browser = await client.post(
            gateway.url + STREAM, json={"message": "echo:hi"}, headers={"origin": "https://allowed.example"}
        )
        assert browser.headers["access-control-allow-origin"] == "https://allowed.example"
