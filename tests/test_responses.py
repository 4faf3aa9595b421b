"""The Responses API face (`/v1/responses`) through the real `openai` SDK, over an upstream speaking chat completions
(translated) and one speaking Responses (relayed unchanged); every other face over a Responses upstream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from chatsse.callers import CallerConfig, CallerTables
from chatsse.callers.keys import key_sha256
from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.redis_server import RedisServer
from tests.servers import Fleet, RunningServer, wait_until

KEY, OTHER = "responses-caller-key-1a", "responses-caller-key-2b"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
OPENED: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def sdk(gateway: RunningServer, key: str = KEY) -> openai.OpenAI:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)
    OPENED.append(client)
    return client


@pytest.fixture(params=["chat", "responses"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def over(make_gateway: GatewayFactory, protocol: str) -> RunningServer:
    """A gateway whose one upstream (the simulator) speaks `protocol`."""
    return make_gateway(api="azure-v1", protocol=protocol, reasoning=True)


def raw_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in lines and lines["data"] != "[DONE]":
            events.append((lines.get("event", ""), json.loads(lines["data"])))
    return events


def test_streamed_gives_the_exact_text_with_every_event_in_order(over: RunningServer, simulator: Simulator) -> None:
    reply = "Hello from Responses 😀,\nline two."
    events = list(sdk(over).responses.create(model="default", input=f"echo:{reply}", stream=True))
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    ]  # fmt: skip
    assert types[-4:] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == reply
    assert [e.sequence_number for e in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == reply and completed.response.usage is not None
    assert completed.response.usage.output_tokens > 0
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


def test_not_streamed_is_one_response_object(over: RunningServer, simulator: Simulator) -> None:
    response = sdk(over).responses.create(model="default", instructions="Be brief.", input="echo:Just this.")
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Just this." and response.usage is not None and response.usage.total_tokens > 0
    sent = simulator.requests[-1].json
    assert sent["stream"] is True  # upstream, always streamed: the relay reads usage and the end as it comes
    if "messages" in sent:  # a chat upstream: translated
        assert sent["messages"] == [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "echo:Just this."},
        ]
    else:  # a Responses upstream: as the client sent it, the deployment as its model
        assert (sent["instructions"], sent["input"], sent["model"]) == ("Be brief.", "echo:Just this.", "gpt-test")


def test_the_stream_helper_with_a_function_tool_round_trip(over: RunningServer, simulator: Simulator) -> None:
    client = sdk(over)
    with client.responses.stream(model="default", input="Weather in Paris? [sim: tools=1]", tools=[WEATHER]) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].arguments == '{"city":"sim"}'
    assert "".join(deltas) == calls[0].arguments and len(deltas) > 1
    answer = client.responses.create(
        model="default",
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
        ],
        tools=[WEATHER],
    )
    assert answer.output_text == "The tool said: sunny"


def test_reasoning_summaries_are_streamed(over: RunningServer) -> None:
    events = list(sdk(over).responses.create(model="default", input="echo:ok[sim: reasoning=2]", stream=True))
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert summary == "thought0 thought1"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "ok"


def test_a_length_cut_is_incomplete(over: RunningServer) -> None:
    events = list(sdk(over).responses.create(model="default", input="echo:a b[sim: finish=length]", stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details is not None
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_a_failure_mid_stream_is_response_failed(over: RunningServer) -> None:
    events = list(sdk(over).responses.create(model="default", input="echo:a b c d[sim: error_after=2]", stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "a b"
    assert events[-1].type == "response.failed" and events[-1].response.error is not None


def test_bad_input_is_a_clear_400_and_nothing_goes_upstream(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(max_media_body_bytes=2000)
    url = gateway.url + "/v1/responses"
    cases: list[tuple[Any, int, str | None]] = [
        ({"model": "default", "input": "hi", "bogus": 1}, 400, "bogus"),
        ({"model": "default", "input": 5}, 400, "input"),
        ({"model": "default", "input": "hi", "temperature": "hot"}, 400, "temperature"),
        ({"model": "default", "input": "hi", "max_output_tokens": 0}, 400, "max_output_tokens"),
        ({"model": "default", "input": [{"type": "function_call_output", "output": "x"}]}, 400, "input[0].call_id"),
        ({"model": "default", "input": "hi", "tools": [{"type": "function"}]}, 400, "tools[0].name"),
        ({"model": "nope", "input": "hi"}, 404, "model"),
        ({"model": "default", "input": "hi", "previous_response_id": "resp_x"}, 404, "previous_response_id"),
        ({"model": "default", "input": "x" * 3000}, 413, None),
    ]
    for body, status, param in cases:
        response = httpx.post(url, json=body)
        assert response.status_code == status, body
        error = response.json()["error"]
        assert error["param"] == param and error["message"] and error["type"], body
    malformed = httpx.post(url, content=b'{"model": ', headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"
    assert simulator.requests == []
    assert sdk(gateway).responses.create(model="default", input="echo:still serving").output_text == "still serving"


def test_what_only_a_responses_upstream_can_do_is_400_over_chat(gateway: RunningServer, simulator: Simulator) -> None:
    client = sdk(gateway)
    for extra, param in (
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"background": True}, "background"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ):
        with pytest.raises(openai.BadRequestError) as raised:
            client.responses.create(model="default", **{"input": "hi", **extra})  # type: ignore[call-overload]
        assert raised.value.body["param"] == param  # type: ignore[index]
        assert "Responses API" in raised.value.body["message"]  # type: ignore[index]
    assert simulator.requests == []


def test_caller_limits_are_the_sdks_errors(make_gateway: GatewayFactory) -> None:
    tables = CallerTables(
        (
            CallerConfig(name="few", key_sha256=key_sha256(KEY), requests_per_minute=1),
            CallerConfig(name="none", key_sha256=key_sha256(OTHER), models=()),
        ),
        quotas_in_memory=True,
    )
    gateway = make_gateway(callers=tables)
    assert sdk(gateway).responses.create(model="default", input="echo:one").output_text == "one"
    with pytest.raises(openai.RateLimitError) as limited:
        sdk(gateway).responses.create(model="default", input="echo:two")
    assert limited.value.response.headers.get("x-ratelimit-limit-requests") == "1"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk(gateway, OTHER).responses.create(model="default", input="echo:three")
    assert denied.value.body["code"] == "model_not_allowed"  # type: ignore[index]


def test_a_callers_max_tokens_caps_max_output_tokens(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    tables = CallerTables((CallerConfig(name="capped", key_sha256=key_sha256(KEY), max_tokens=40),))
    gateway = make_gateway(callers=tables, api="azure-v1", protocol="responses")
    sdk(gateway).responses.create(model="default", input="echo:hi", max_output_tokens=500)
    assert simulator.requests[-1].json["max_output_tokens"] == 40


def test_chained_responses_land_on_the_upstream_that_made_them(fleet: Fleet) -> None:
    for name in ("east", "west"):
        fleet.sim(name)
    gateway = fleet.gateway(*(fleet.upstream(n, api="azure-v1", protocol="responses") for n in ("east", "west")))
    client = sdk(gateway)
    for _ in range(4):
        first = client.responses.create(model="default", input="echo:first")
        maker = "east" if fleet.counts()["east"] else "west"
        before = fleet.counts()
        second = client.responses.create(model="default", input="What did I ask?", previous_response_id=first.id)
        assert fleet.counts()[maker] == before[maker] + 1, "a chained request went to another upstream"
        assert "turn 2" in second.output_text  # the maker saw the earlier turn
        assert fleet.sims[maker].requests[-1].json["previous_response_id"] == first.id
        for sim in fleet.sims.values():
            sim.requests.clear()
    fetched = client.responses.retrieve(second.id)
    assert fetched.id == second.id and fetched.output_text == second.output_text
    items = client.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["message"]
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)


def test_another_callers_response_is_404(make_gateway: GatewayFactory) -> None:
    tables = CallerTables(
        (
            CallerConfig(name="a", key_sha256=key_sha256(KEY)),
            CallerConfig(name="b", key_sha256=key_sha256(OTHER)),
        )
    )
    gateway = make_gateway(callers=tables, api="azure-v1", protocol="responses")
    made = sdk(gateway).responses.create(model="default", input="echo:mine")
    assert sdk(gateway).responses.retrieve(made.id).output_text == "mine"
    with pytest.raises(openai.NotFoundError):
        sdk(gateway, OTHER).responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk(gateway, OTHER).responses.create(model="default", input="hi", previous_response_id=made.id)


def test_unknown_upstream_events_arrive_unchanged(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(api="azure-v1", protocol="responses")
    body = {"model": "default", "input": "echo:after the search[sim: builtin=1]", "stream": True}
    events = raw_events(httpx.post(gateway.url + "/v1/responses", json=body).text)
    future = [data for kind, data in events if kind == "response.sim_future.delta"]
    assert len(future) == 1 and future[0]["delta"] == {"anything": [1, 2, 3]}
    kinds = [kind for kind, _ in events]
    assert "response.web_search_call.searching" in kinds and kinds[-1] == "response.completed"
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))  # the upstream's own


def test_two_thousand_tool_argument_deltas(make_gateway: GatewayFactory, protocol: str) -> None:
    gateway = make_gateway(api="azure-v1", protocol=protocol)
    arguments = json.dumps({"city": "x" * 1990})
    pieces = ",".join(["1"] * 2000)
    prompt = f"echo:{arguments}[sim: tools=1 arg_pieces={pieces}]"
    events: list[Any] = list(sdk(gateway).responses.create(model="default", input=prompt, tools=[WEATHER], stream=True))
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) >= 2000 and "".join(deltas) == arguments


def test_a_client_that_leaves_closes_the_upstream(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(api="azure-v1", protocol="responses")
    body = {"model": "default", "input": "echo:a b c d e f[sim: hold_after=2 hold=left]", "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/responses", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if "output_text.delta" in line:
                break
        left = time.monotonic()
    assert wait_until(lambda: simulator.requests[-1].peer_closed_at is not None, timeout=10)
    closed = simulator.requests[-1].peer_closed_at
    assert closed is not None and closed - left < 5  # the bound is 1 s; this is a safety net
    simulator.release("left")


def test_every_face_over_a_responses_upstream(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(api="azure-v1", protocol="responses", reasoning=True)
    native = raw_events(httpx.post(gateway.url + "/api/v1/chat/stream", json={"message": "echo:plain text"}).text)
    assert "".join(data.get("content", "") for _, data in native) == "plain text"
    done = native[-1][1]
    assert done["done"] is True and done["usage"]["completion_tokens"] == 2
    sent = simulator.requests[-1].json
    assert sent["input"] == [{"role": "user", "content": "echo:plain text"}] and sent["store"] is False

    client = sdk(gateway)
    chat_tool: Any = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    chunks = list(
        client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Weather? [sim: tools=1]"}],
            tools=[chat_tool],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0] is not None and calls[0][0].function is not None and calls[0][0].function.name == "get_weather"
    assert "".join((c[0].function.arguments or "") for c in calls if c[0].function) == '{"city":"sim"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert simulator.requests[-1].json["tools"] == [WEATHER]
    with pytest.raises(openai.BadRequestError) as many:
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}], n=2)
    assert many.value.body["param"] == "n"  # type: ignore[index]

    ui = {
        "id": "c1",
        "messages": [
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "echo:ui text[sim: reasoning=1]"}]}
        ],
    }
    parts = [data for _, data in raw_events(httpx.post(gateway.url + "/api/v1/chat/ui", json=ui).text)]
    assert "".join(p.get("delta", "") for p in parts if p.get("type") == "text-delta") == "ui text"
    assert "".join(p.get("delta", "") for p in parts if p.get("type") == "reasoning-delta") == "thought0"


def test_background_responses_are_answered_at_once_and_streamed_later(fleet: Fleet) -> None:
    fleet.sim("bg")
    gateway = fleet.gateway(fleet.upstream("bg", api="azure-v1", protocol="responses"))
    client = sdk(gateway)
    accepted = client.responses.create(model="default", input="echo:one two three four", background=True)
    assert accepted.status in ("queued", "in_progress") and accepted.background is True
    assert wait_until(lambda: client.responses.retrieve(accepted.id).status == "completed", timeout=10)
    url = f"{gateway.url}/v1/responses/{accepted.id}?stream=true&starting_after=1"
    events = raw_events(httpx.get(url, timeout=10).text)
    assert events[0][1]["sequence_number"] == 2 and events[-1][0] == "response.completed"
    assert "".join(data.get("delta", "") for kind, data in events if kind.endswith("output_text.delta")) == (
        "one two three four"
    )
    cancelled = client.responses.cancel(accepted.id)
    assert cancelled.id == accepted.id


def test_stored_ids_are_shared_through_redis(fleet: Fleet, redis_server: RedisServer) -> None:
    for name in ("east", "west"):
        fleet.sim(name)
    upstreams = [fleet.upstream(n, api="azure-v1", protocol="responses") for n in ("east", "west")]
    one = fleet.gateway(*upstreams, redis_url=redis_server.url)
    other = fleet.gateway(*upstreams, redis_url=redis_server.url)
    for _ in range(3):
        first = sdk(one).responses.create(model="default", input="echo:first")
        maker = "east" if fleet.counts()["east"] else "west"
        second = sdk(other).responses.create(model="default", input="again?", previous_response_id=first.id)
        assert (
            "turn 2" in second.output_text and fleet.sims[maker].requests[-1].json["previous_response_id"] == first.id
        )
        for sim in fleet.sims.values():
            sim.requests.clear()


def test_stopping_a_kept_background_response_cancels_it_upstream(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway(api="azure-v1", protocol="responses", resume_seconds=30)
    body = {"model": "default", "input": "echo:a b c d e[sim: hold_after=2 hold=bg]", "stream": True}
    body["background"] = True
    with httpx.stream("POST", gateway.url + "/v1/responses", json=body, timeout=30) as response:
        stream_id = response.headers["x-chatsse-stream"]
        lines = response.iter_lines()
        next(line for line in lines if "output_text.delta" in line)
        assert httpx.delete(f"{gateway.url}/api/v1/chat/stream/{stream_id}").status_code == 204
        rest = list(lines)
    assert wait_until(lambda: any(r.path.endswith("/cancel") for r in simulator.requests), timeout=10)
    cancel = next(r for r in simulator.requests if r.path.endswith("/cancel"))
    assert cancel.method == "POST" and cancel.headers["api-key"] == simulator.api_key
    ended = raw_events("\n".join(rest))[-1]
    assert ended[0] == "response.incomplete" and ended[1]["response"]["incomplete_details"]["reason"] == "stopped"
    assert ended[1]["response"]["id"] == cancel.path.split("/")[-2]  # the upstream's own id, as its events had it
    simulator.release("bg")


def test_a_callers_tokens_are_charged_from_the_responses_usage(make_gateway: GatewayFactory, protocol: str) -> None:
    tables = CallerTables(
        (CallerConfig(name="q", key_sha256=key_sha256(KEY), token_quota=10_000, quota_period="day"),),
        quotas_in_memory=True,
    )
    gateway = make_gateway(callers=tables, api="azure-v1", protocol=protocol)
    response = sdk(gateway).responses.create(model="default", input="echo:count these four words")
    assert response.usage is not None and response.usage.total_tokens > 0
    usage = httpx.get(gateway.url + "/api/v1/usage", headers={"authorization": f"Bearer {KEY}"}).json()
    assert usage["quota"]["used"] == response.usage.total_tokens


def test_a_rate_limited_responses_upstream_fails_over(fleet: Fleet) -> None:
    fleet.sim("busy", always="status=429 retry_after=30")
    fleet.sim("free")
    busy = fleet.upstream("busy", api="azure-v1", protocol="responses")
    free = fleet.upstream("free", api="azure-v1", protocol="responses", priority=1)
    gateway = fleet.gateway(busy, free)
    client = sdk(gateway)
    first = client.responses.create(model="default", input="echo:overflow")
    assert first.output_text == "overflow" and fleet.counts() == {"busy": 1, "free": 1}
    chained = client.responses.create(model="default", input="and again", previous_response_id=first.id)
    assert "turn 2" in chained.output_text and fleet.counts() == {"busy": 1, "free": 2}  # the maker; busy rests


def test_the_operators_system_prompt_comes_first(
    make_gateway: GatewayFactory, simulator: Simulator, protocol: str
) -> None:
    gateway = make_gateway(system_prompt="Be kind.", api="azure-v1", protocol=protocol)
    assert sdk(gateway).responses.create(model="default", input="echo:ok").output_text == "ok"
    sent = simulator.requests[-1].json
    first = sent["input"][0] if protocol == "responses" else sent["messages"][0]
    assert first == {"role": "system", "content": "Be kind."}


def test_every_api_shape_reaches_the_responses_api(fleet: Fleet) -> None:
    fleet.sim("dated")
    fleet.sim("v1")
    fleet.sim("compatible")
    shapes = {
        "dated": fleet.upstream("dated", api="azure", api_version="2025-04-01-preview", protocol="responses"),
        "v1": fleet.upstream("v1", api="azure-v1", protocol="responses"),
        "compatible": fleet.upstream("compatible", api="openai", protocol="responses"),
    }
    paths = {"dated": "/openai/responses", "v1": "/openai/v1/responses", "compatible": "/v1/responses"}
    for name, upstream in shapes.items():
        gateway = fleet.gateway(upstream)
        assert sdk(gateway).responses.create(model="default", input=f"echo:{name}").output_text == name
        [request] = fleet.sims[name].requests
        assert request.path == paths[name] and request.json["model"] == f"dep-{name}"
        assert request.query.get("api-version") == ("2025-04-01-preview" if name == "dated" else None)
        assert ("api-key" in request.headers) == (name != "compatible")
