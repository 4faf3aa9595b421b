"""The happy path through a real gateway and the simulator: event sequence, exact text, streaming, request shape."""

from __future__ import annotations

import json

import httpx
import pytest
from httpx_sse import aconnect_sse

from chatsse.simulator import Simulator
from chatsse.simulator.replies import reply_text, split_tokens
from chatsse.simulator.scenario import Scenario
from tests.conftest import API_KEY, DEPLOYMENT, GatewayFactory
from tests.helpers import STREAM, chat, kinds, text_of
from tests.servers import RunningServer, wait_until

pytestmark = pytest.mark.anyio


async def test_health(gateway: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(gateway.url + "/health")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"
    assert API_KEY not in response.text


async def test_stream_is_content_events_then_one_done(gateway: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"message": "Hello there"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    expected = reply_text([{"role": "user", "content": "Hello there"}], Scenario())
    assert kinds(events) == ["content"] * len(split_tokens(expected, Scenario())) + ["done"]
    assert all(event["content"] for event in events[:-1])
    assert text_of(events) == expected
    done = events[-1]
    assert done["done"] is True and done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == len(events) - 1
    assert done["usage"]["total_tokens"] == done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"]


async def test_events_are_single_compact_json_data_lines(gateway: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.url + STREAM, json={"message": 'echo:say "hi"\n'})
    blocks = [block for block in response.text.split("\n\n") if block]
    for block in blocks:
        assert block.startswith("data: {") and "\n" not in block
        payload = block[len("data: ") :]
        assert payload == json.dumps(json.loads(payload), ensure_ascii=False, separators=(",", ":"))


TRICKY_TEXTS = {
    "emoji_and_cjk": "你好！😀 👩‍👩‍👧 café 𝄞 🇯🇵",
    "newlines": "line one\nline two\r\n\nline four\r",
    "quotes_backslashes": 'He said "hi" \\ and left \\"quietly\\"',
    "looks_like_sse": "data: x\n\ndata: [DONE]\n\n: comment\nevent: error\n",
    "unicode_line_separators": "a\u2028b\u2029c\x85d\x0be\x1cf",
    "json_like": '{"done": true} {"error": 1}',
}


@pytest.mark.parametrize("name", sorted(TRICKY_TEXTS))
@pytest.mark.parametrize("wire", ["whole", "split=3", "split=1 ascii=1"])
async def test_text_arrives_exactly(gateway: RunningServer, name: str, wire: str) -> None:
    text = TRICKY_TEXTS[name]
    directive = "" if wire == "whole" else f"[sim: {wire}]"
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"message": f"echo:{text}{directive}"})
    assert response.status_code == 200
    assert kinds(events)[-1] == "done"
    assert text_of(events) == text


async def test_first_event_arrives_while_the_upstream_holds_the_rest(
    gateway: RunningServer, simulator: Simulator
) -> None:
    async with httpx.AsyncClient() as client:
        payload = {"message": "echo:one two three four five[sim: hold_after=2 hold=stream-test]"}
        async with aconnect_sse(client, "POST", gateway.url + STREAM, json=payload) as source:
            events = source.aiter_sse()
            first = json.loads((await anext(events)).data)
            second = json.loads((await anext(events)).data)
            # The simulator has sent only two tokens and is still holding the reply open.
            assert [first, second] == [{"content": "one"}, {"content": " two"}]
            assert simulator.requests[-1].finished_at is None
            simulator.release("stream-test")
            rest = [json.loads(event.data) async for event in events]
    assert text_of(rest) == " three four five"
    assert kinds(rest)[-1] == "done"


async def test_request_sent_upstream(gateway: RunningServer, simulator: Simulator) -> None:
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"messages": history})
    assert response.status_code == 200 and kinds(events)[-1] == "done"
    [sent] = simulator.requests
    assert sent.method == "POST"
    assert sent.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == API_KEY
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept-encoding"] == "identity"  # a stream read as it comes, not compressed
    assert sent.json == {"messages": history, "stream": True, "stream_options": {"include_usage": True}}
    assert "(turn 2)" in text_of(events)


async def test_a_stream_compressed_though_asked_not_to_be_is_read_decompressed(
    gateway: RunningServer, simulator: Simulator
) -> None:
    # The gateway reads its upstream's bytes raw; a proxy on the way that gzips anyway must not garble them.
    async with httpx.AsyncClient() as client:
        plain = text_of((await chat(client, gateway.url, {"message": "echo:tea for two, café au lait"}))[1])
        response, events = await chat(client, gateway.url, {"message": "echo:tea for two, café au lait[sim: gzip=1]"})
    assert response.status_code == 200 and kinds(events)[-1] == "done"
    assert text_of(events) == plain == "tea for two, café au lait"


async def test_system_prompt_is_prepended(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(system_prompt="You are terse.")
    async with httpx.AsyncClient() as client:
        await chat(client, gateway.url, {"message": "Hi"})
    assert simulator.requests[-1].json["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
    ]


async def test_old_api_version_gets_no_stream_options(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(api_version="2024-06-01")
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"message": "Hi"})
    assert simulator.requests[-1].query == {"api-version": "2024-06-01"}
    assert "stream_options" not in simulator.requests[-1].json
    assert events[-1] == {"done": True, "finish_reason": "stop"}  # no usage without include_usage


@pytest.mark.parametrize("reason", ["length", "content_filter"])
async def test_finish_reason_is_passed_on(gateway: RunningServer, reason: str) -> None:
    async with httpx.AsyncClient() as client:
        _, events = await chat(client, gateway.url, {"message": f"echo:partial text[sim: finish={reason}]"})
    assert text_of(events) == "partial text"
    assert events[-1]["done"] is True and events[-1]["finish_reason"] == reason


async def test_many_concurrent_streams_each_get_their_own_text(gateway: RunningServer) -> None:
    import anyio

    results: dict[int, str] = {}

    async def one(client: httpx.AsyncClient, index: int) -> None:
        _, events = await chat(client, gateway.url, {"message": f"echo:stream number {index} [sim: delay=0.002]"})
        assert kinds(events)[-1] == "done"
        results[index] = text_of(events)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=None)) as client, anyio.create_task_group() as tg:
        for index in range(40):
            tg.start_soon(one, client, index)
    assert results == {index: f"stream number {index} " for index in range(40)}
    assert wait_until(lambda: gateway.open_tasks() == 0)


async def test_eventsource_get_streams_the_same_events_with_a_retry_hint(
    gateway: RunningServer, simulator: Simulator
) -> None:
    async with httpx.AsyncClient() as client:
        url = gateway.url + STREAM
        async with aconnect_sse(client, "GET", url, params={"message": "echo:över there"}) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            raw = [event async for event in source.aiter_sse()]
    events = [json.loads(event.data) for event in raw if event.data]
    assert text_of(events) == "över there" and kinds(events)[-1] == "done"
    assert raw[0].retry == 30000
    assert simulator.requests[-1].json["messages"] == [{"role": "user", "content": "echo:över there"}]
