"""Bad input: a JSON error with a stable code and the right status, no upstream call, and everyone else still served."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM, chat, kinds, text_of
from tests.servers import RunningServer

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}

BAD_BODIES = {
    "malformed_json": (b'{"message": "hi"', 400, "invalid_json"),
    "empty_body": (b"", 400, "invalid_json"),
    "not_utf8": (b'{"message": "\xff\xfe"}', 400, "invalid_json"),
    "deeply_nested": (b"[" * 30_000 + b"]" * 30_000, 400, "invalid_json"),
    "array_body": (b'["hi"]', 422, "invalid_request"),
    "string_body": (b'"hi"', 422, "invalid_request"),
    "message_missing": (b'{"text": "hi"}', 422, "invalid_request"),
    "message_empty": (b'{"message": "   "}', 422, "invalid_request"),
    "message_not_string": (b'{"message": 42}', 422, "invalid_request"),
    "message_null": (b'{"message": null}', 422, "invalid_request"),
    "both_fields": (b'{"message": "a", "messages": [{"role": "user", "content": "b"}]}', 422, "invalid_request"),
    "messages_not_list": (b'{"messages": "hi"}', 422, "invalid_request"),
    "messages_empty": (b'{"messages": []}', 422, "invalid_request"),
    "messages_bad_role": (b'{"messages": [{"role": "tool", "content": "x"}]}', 422, "invalid_request"),
    "messages_bad_content": (b'{"messages": [{"role": "user", "content": ["x"]}]}', 422, "invalid_request"),
    "messages_not_objects": (b'{"messages": ["hi"]}', 422, "invalid_request"),
    "messages_last_not_user": (
        b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
        422,
        "invalid_request",
    ),
}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and len(error["message"]) > 10


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
async def test_bad_body_is_refused_without_calling_upstream(
    gateway: RunningServer, simulator: Simulator, name: str
) -> None:
    body, status, code = BAD_BODIES[name]
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.url + STREAM, content=body, headers=JSON)
    assert_error(response, status, code)
    assert simulator.requests == []


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
async def test_non_json_content_type_is_415(gateway: RunningServer, simulator: Simulator, content_type: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.url + STREAM, content=b'{"message": "hi"}', headers=headers)
    assert_error(response, 415, "unsupported_media_type")
    assert "application/json" in response.json()["error"]["message"]
    assert simulator.requests == []


async def test_json_content_type_with_charset_is_accepted(gateway: RunningServer) -> None:
    headers = {"content-type": "application/json; charset=utf-8"}
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.url + STREAM, content=b'{"message": "echo:ok"}', headers=headers)
    assert response.status_code == 200
    assert '"content":"ok"' in response.text


async def test_body_over_the_limit_is_413(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(max_body_bytes=1000)
    body = json.dumps({"message": "x" * 2000}).encode()
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.url + STREAM, content=body, headers=JSON)
        assert_error(response, 413, "payload_too_large")
        assert "1000" in response.json()["error"]["message"]

        # Without a Content-Length (chunked upload) the limit still holds while reading.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(200):
                yield b" " * 100

        response = await client.post(gateway.url + STREAM, content=chunks(), headers=JSON)
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "payload_too_large")

        fits = json.dumps({"message": "echo:" + "y" * 900}).encode()
        assert len(fits) <= 1000
        response = await client.post(gateway.url + STREAM, content=fits, headers=JSON)
        assert response.status_code == 200
    assert len(simulator.requests) == 1


async def test_wrong_method_is_405_json(gateway: RunningServer, simulator: Simulator) -> None:
    async with httpx.AsyncClient() as client:
        for method in ("PUT", "DELETE", "PATCH"):
            response = await client.request(method, gateway.url + STREAM)
            assert_error(response, 405, "method_not_allowed")
            assert "POST" in response.headers["allow"]
        response = await client.head(gateway.url + STREAM, params={"message": "hi"})
        assert response.status_code == 405
        response = await client.post(gateway.url + "/health")
        assert_error(response, 405, "method_not_allowed")
    assert simulator.requests == []


async def test_unknown_path_is_404_json(gateway: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.url + "/api/v1/chat", json={"message": "hi"})
    assert_error(response, 404, "not_found")
    assert "/api/v1/chat/stream" in response.json()["error"]["message"]


async def test_bad_requests_do_not_disturb_a_stream_in_flight(gateway: RunningServer, simulator: Simulator) -> None:
    async with httpx.AsyncClient() as client:
        payload = {"message": "echo:alpha beta gamma[sim: hold_after=1 hold=inflight]"}
        async with aconnect_sse(client, "POST", gateway.url + STREAM, json=payload) as source:
            events = source.aiter_sse()
            first = json.loads((await anext(events)).data)
            statuses: list[int] = []

            async def bad(body: bytes) -> None:
                statuses.append((await client.post(gateway.url + STREAM, content=body, headers=JSON)).status_code)

            async with anyio.create_task_group() as tg:
                for body, _, _ in BAD_BODIES.values():
                    tg.start_soon(bad, body)
            assert sorted(statuses) == sorted(status for _, status, _ in BAD_BODIES.values())
            simulator.release("inflight")
            rest = [json.loads(event.data) async for event in events]
        assert text_of([first, *rest]) == "alpha beta gamma"
        assert kinds(rest)[-1] == "done"
        response, after = await chat(client, gateway.url, {"message": "echo:still here"})
    assert response.status_code == 200 and text_of(after) == "still here"
    assert len(simulator.requests) == 2


async def test_eventsource_get_without_or_with_overlong_message(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway(max_body_bytes=100)
    async with httpx.AsyncClient() as client:
        assert_error(await client.get(gateway.url + STREAM), 422, "invalid_request")
        assert_error(await client.get(gateway.url + STREAM, params={"message": " "}), 422, "invalid_request")
        assert_error(await client.get(gateway.url + STREAM, params={"message": "é" * 51}), 413, "payload_too_large")
        response = await client.get(gateway.url + STREAM, params={"message": "echo:" + "x" * 95})
        assert response.status_code == 200
    assert len(simulator.requests) == 1
