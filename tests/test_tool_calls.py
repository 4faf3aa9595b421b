"""Tool calls end to end: any split of their deltas arrives byte-exact in the OpenAI SDK (a property), a kept reply's
tool calls resume on another process through Redis, and the native face, which carries text only, ends a reply
whose model asks for a tool with a clear error, never silence."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionToolParam

from chatsse.events import Content, Done, Event, Failed, Finish, Reasoning, Refusal, ToolCall, from_payload
from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM
from tests.redis_server import RedisServer
from tests.servers import RunningServer, chatsse_serve, wait_until

TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}} for name in ("first", "second")
]
# JSON text without `|` (which separates the calls in the simulator's echo) and `[` (which could open a directive).
SAFE_TEXT = st.text(st.characters(exclude_characters="|[", exclude_categories=["Cs"]), max_size=12)
ARGUMENTS = st.dictionaries(SAFE_TEXT, st.one_of(SAFE_TEXT, st.integers(), st.booleans(), st.none()), max_size=4).map(
    lambda value: json.dumps(value, ensure_ascii=False)
)


@pytest.fixture
def sdk_gateway(make_gateway: GatewayFactory) -> RunningServer:
    return make_gateway()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arguments=st.lists(ARGUMENTS, min_size=1, max_size=2),
    pieces=st.lists(st.integers(0, 9), max_size=12),
    interleave=st.booleans(),
)
def test_any_split_of_tool_call_deltas_arrives_byte_exact(
    sdk_gateway: RunningServer, arguments: list[str], pieces: list[int], interleave: bool
) -> None:
    directive = f"tools={len(arguments)} interleave={int(interleave)}"
    if pieces:
        directive += " arg_pieces=" + ",".join(map(str, pieces))
    prompt = "echo:" + "|".join(arguments) + f"[sim: {directive}]"
    with (
        openai.OpenAI(base_url=sdk_gateway.url + "/v1", api_key="-", max_retries=0, timeout=30) as sdk,
        sdk.chat.completions.stream(
            model="default", messages=[{"role": "user", "content": prompt}], tools=TOOLS
        ) as stream,
    ):
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [call.function.arguments for call in calls] == arguments
    assert [call.function.name for call in calls] == ["first", "second"][: len(arguments)]
    assert [call.id for call in calls] == [f"call_sim{i}" for i in range(len(arguments))]
    assert final.choices[0].finish_reason == "tool_calls"


def test_every_event_survives_its_payload() -> None:
    events: list[Event] = [
        Content("a"),
        Content("b", 2, {"content": [{"token": "b", "logprob": -0.1}], "refusal": None}),
        Reasoning("r", 1),
        Refusal("no", 0, {"refusal": []}),
        ToolCall(0, "call_1", "lookup", ""),
        ToolCall(0, None, None, '{"q":', 3),
        ToolCall(-1, None, "legacy", "{}"),
        Finish("tool_calls", 1),
        Done("stop", {"total_tokens": 3}),
        Failed("upstream_timeout", "silent", "req-1"),
    ]
    assert [from_payload(json.loads(json.dumps(event.payload()))) for event in events] == events
    assert Content("a").payload() == {"content": "a"}  # the native face's wire format is unchanged


def test_the_native_face_ends_a_reply_that_asks_for_a_tool_with_an_error(
    gateway: RunningServer, simulator: Simulator
) -> None:
    at_once = httpx.post(gateway.url + STREAM, json={"message": "Weather? [sim: tool=get_weather]"})
    assert at_once.status_code == 502 and at_once.json()["error"]["code"] == "tool_calls_unsupported"
    with httpx.stream(
        "POST", gateway.url + STREAM, json={"message": "echo:Let me look.[sim: tool=get_weather preamble=1]"}
    ) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200
    assert "".join(e.get("content", "") for e in events) == "Let me look."
    assert (
        events[-1]["error"]["code"] == "tool_calls_unsupported"
        and "/v1/chat/completions" in events[-1]["error"]["message"]
    )
    assert not any("done" in e for e in events)
    upstream = simulator.requests[-1]
    assert wait_until(lambda: upstream.closed, timeout=5)


@pytest.fixture
def two_resuming(simulator: Simulator, redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    env = {"CHATSSE_REDIS_URL": redis_server.url, "CHATSSE_RESUME_SECONDS": "30", "CHATSSE_PING_SECONDS": "0"}
    with ExitStack() as stack:
        first = stack.enter_context(chatsse_serve(tmp_path, simulator.url, env=env)).url
        second = stack.enter_context(chatsse_serve(tmp_path, simulator.url, env=env)).url
        yield first, second


def ui_chunks(text: str) -> list[Any]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def resume_when_shared(client: httpx.Client, url: str) -> httpx.Response:
    """GET a chat's resume route, again while it answers 204: a kept reply reaches Redis within the writer's 10 ms,
    so a reconnect faster than that finds none yet (a page reload never is)."""
    deadline = time.monotonic() + 5
    while True:
        response = client.send(client.build_request("GET", url), stream=True)
        if response.status_code != 204 or time.monotonic() > deadline:
            return response
        response.close()
        time.sleep(0.01)


def test_a_kept_replys_tool_calls_resume_on_another_process(
    two_resuming: tuple[str, str], simulator: Simulator
) -> None:
    first, second = two_resuming
    prompt = 'echo:{"a":1}|{"b":[2,3]}[sim: tools=2 arg_pieces=2,0,3 hold_after=3 hold=tools-resume]'
    body = {"id": "tool-chat", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": prompt}]}]}
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", first + "/api/v1/chat/ui", json={**body, "tools": TOOLS}) as response:
            seen = ""
            for text in response.iter_text():
                seen += text
                if '"tool-input-delta"' in seen:
                    break  # the page closed mid-call
        resumed = resume_when_shared(client, f"{second}/api/v1/chat/ui/tool-chat/stream")
        try:
            assert resumed.status_code == 200
            reads = resumed.iter_text()
            replayed = next(reads)
            simulator.release("tools-resume")
            replayed += "".join(reads)
        finally:
            resumed.close()
    got = ui_chunks(replayed)
    assert [c["type"] for c in got if c["type"].startswith("tool-input-")].count("tool-input-start") == 2
    deltas: dict[str, str] = {}
    for chunk in got:
        if chunk["type"] == "tool-input-delta":
            deltas[chunk["toolCallId"]] = deltas.get(chunk["toolCallId"], "") + chunk["inputTextDelta"]
    assert deltas == {"call_sim0": '{"a":1}', "call_sim1": '{"b":[2,3]}'}
    available = [(c["toolName"], c["input"]) for c in got if c["type"] == "tool-input-available"]
    assert available == [("first", {"a": 1}), ("second", {"b": [2, 3]})]
    assert got[-1] == {"type": "finish", "finishReason": "tool-calls", "messageMetadata": got[-1]["messageMetadata"]}
    assert len(simulator.requests) == 1
