"""Text that is not valid Unicode, content as a list of parts, and the unexpected-error path, through a real server."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatsse.app import create_app
from chatsse.settings import Settings
from chatsse.simulator import Simulator
from tests.helpers import STREAM, chat, kinds, text_of
from tests.servers import RunningServer, chatsse_serve, serve_in_thread, wait_until

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}

BAD_TEXT_BODIES = {
    "lone_high_surrogate": (rb'{"message":"a\ud800b"}', 400, "invalid_json"),
    "lone_low_surrogate_in_messages": (rb'{"messages":[{"role":"user","content":"\udfff"}]}', 400, "invalid_json"),
    "reversed_pair": (rb'{"message":"\ude00\ud83d"}', 400, "invalid_json"),
    "surrogate_in_a_key": (rb'{"message":"hi","\ud800":1}', 400, "invalid_json"),
    "invalid_utf8_byte": (b'{"message":"caf\xe9"}', 400, "invalid_json"),
    "overlong_utf8": (b'{"message":"\xc0\xaf"}', 400, "invalid_json"),
    "utf8_encoded_surrogate": (b'{"message":"\xed\xa0\x80"}', 400, "invalid_json"),
    "nan": (b'{"message":NaN}', 400, "invalid_json"),
    "infinity_in_messages": (b'{"messages":[{"role":"user","content":Infinity}]}', 400, "invalid_json"),
    "image_part": (
        b'{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}',
        422,
        "invalid_request",
    ),
    "part_without_type": (b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}', 422, "invalid_request"),
    "part_text_not_string": (
        b'{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}',
        422,
        "invalid_request",
    ),
    "parts_all_empty": (
        b'{"messages":[{"role":"user","content":[{"type":"text","text":" "}]}]}',
        422,
        "invalid_request",
    ),
}


def assert_traced_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    error: dict[str, str] = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> bool:
    return not any(record.exc_info for record in caplog.records) and "Traceback" not in caplog.text


@pytest.mark.parametrize("name", sorted(BAD_TEXT_BODIES))
async def test_text_that_is_not_unicode_gets_a_clear_4xx(
    gateway: RunningServer, simulator: Simulator, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.INFO)
    body, status, code = BAD_TEXT_BODIES[name]
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.url + STREAM, content=body, headers=JSON)
    assert_traced_error(response, status, code)
    assert simulator.requests == []
    assert wait_until(lambda: any(r.name == "chatsse.access" for r in caplog.records))
    assert no_tracebacks(caplog)


async def test_the_error_names_unicode_and_the_part_type(gateway: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        surrogate = await client.post(gateway.url + STREAM, content=rb'{"message":"\ud83d"}', headers=JSON)
        image = await client.post(gateway.url + STREAM, content=BAD_TEXT_BODIES["image_part"][0], headers=JSON)
    assert "Unicode" in assert_traced_error(surrogate, 400, "invalid_json")["message"]
    message = assert_traced_error(image, 422, "invalid_request")["message"]
    assert '"image_url"' in message and '"messages"[0].content[0]' in message


@pytest.mark.parametrize("query", [b"message=a%ED%A0%80b", b"message=%FF", b"message=%C0%AF"])
async def test_query_text_that_is_not_utf8_gets_a_clear_4xx(
    gateway: RunningServer, simulator: Simulator, caplog: pytest.LogCaptureFixture, query: bytes
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(gateway.url + STREAM + "?" + query.decode())
    assert "UTF-8" in assert_traced_error(response, 422, "invalid_request")["message"]
    assert simulator.requests == []
    assert no_tracebacks(caplog)


async def test_paired_surrogate_escapes_are_text_and_reach_the_reply(gateway: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.url + STREAM, content=rb'{"message":"echo:\ud83d\ude00 \u0000ok"}', headers=JSON
        )
    assert response.status_code == 200
    events = [json.loads(block[6:]) for block in response.text.split("\n\n") if block.startswith("data: ")]
    assert text_of(events) == "\U0001f600 \x00ok" and kinds(events)[-1] == "done"


async def test_content_parts_are_joined_into_one_text(gateway: RunningServer, simulator: Simulator) -> None:
    turns = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "echo:one "}, {"type": "text", "text": "two"}]},
    ]
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"messages": turns})
    assert response.status_code == 200 and text_of(events) == "one two"
    assert simulator.requests[-1].json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "echo:one two"},
    ]


class Bug(Exception):
    pass


async def _buggy(request: Request) -> Response:
    raise Bug("secret-user-text-7d1e")


def test_an_unexpected_error_is_traced_logged_and_counted(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(settings)
    app.router.routes.append(Route("/api/v1/buggy", _buggy))  # a real bug in a real route of the real app
    with serve_in_thread(app) as server:
        response = httpx.get(server.url + "/api/v1/buggy", headers={"x-request-id": "trace-me-42"})
        assert wait_until(lambda: any(r.name == "chatsse.access" for r in caplog.records))
        metrics = httpx.get(server.url + "/metrics").text
        ok = httpx.post(server.url + STREAM, json={"message": "echo:still serving"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "trace-me-42"
    assert response.json()["error"] == {
        "code": "internal_error",
        "message": "Something went wrong inside chatsse.",
        "request_id": "trace-me-42",
    }
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "chatsse.access"][:1]
    assert line["request_id"] == "trace-me-42" and line["status"] == 500 and line["exception"] == "Bug"
    assert "secret-user-text" not in json.dumps(line)
    assert sum(1 for r in caplog.records if r.exc_info) == 1  # exactly one traceback, for the bug
    assert 'chatsse_requests_total{route="other",status="500"} 1.0' in metrics
    assert '"content":" serving"' in ok.text


WARNING = "CHATSSE_API_KEYS nor CHATSSE_RATE_LIMIT"


def _start_output(args: list[str], extra_env: dict[str, str], tmp_path: Path) -> str:
    """Start `chatsse serve` with args, wait for it to serve, stop it, return its stderr."""
    simulator = Simulator()
    simulator.start_in_thread()
    try:
        with chatsse_serve(tmp_path, simulator.url, *args, env=extra_env) as gateway:
            pass
    finally:
        simulator.stop_thread()
    return gateway.stderr


@pytest.mark.parametrize(
    ("args", "env", "warned"),
    [
        (["--host", "0.0.0.0"], {}, True),
        (["--host", "0.0.0.0"], {"CHATSSE_RATE_LIMIT": "60/minute"}, False),
        (["--host", "0.0.0.0"], {"CHATSSE_API_KEYS": "caller-key"}, False),
        (["--host", "0.0.0.0", "--demo"], {}, False),
        (["--host", "127.0.0.1"], {}, False),
    ],
    ids=["open", "rate-limited", "keys", "demo", "loopback"],
)
def test_an_open_relay_is_named_at_start(args: list[str], env: dict[str, str], warned: bool, tmp_path: Path) -> None:
    stderr = _start_output(args, env, tmp_path)
    assert (WARNING in stderr) is warned, stderr
    assert stderr.count(WARNING) <= 1
