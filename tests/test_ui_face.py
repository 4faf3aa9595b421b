"""The useChat face on the wire (the AI SDK itself is driven in test_node_clients): chunks, parts, resume, errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.servers import RunningServer, wait_until

UI = "/api/v1/chat/ui"


def ui_body(*parts: dict[str, Any], chat_id: str = "chat-1") -> dict[str, Any]:
    history = [
        {"id": "u0", "role": "user", "parts": [{"type": "text", "text": "Earlier question"}]},
        {
            "id": "a0",
            "role": "assistant",
            "parts": [
                {"type": "step-start"},
                {"type": "reasoning", "text": "hmm"},
                {"type": "text", "text": "Earlier"},
            ],
        },
    ]
    return {
        "id": chat_id,
        "trigger": "submit-message",
        "messages": [*history, {"id": "u1", "role": "user", "parts": list(parts)}],
    }


def chunks(text: str) -> list[Any]:
    return [json.loads(b[6:]) if b[6:] != "[DONE]" else "[DONE]" for b in text.split("\n\n") if b.startswith("data: ")]


def test_the_ui_message_stream_protocol(gateway: RunningServer, simulator: Simulator) -> None:
    response = httpx.post(gateway.url + UI, json=ui_body({"type": "text", "text": "echo:one two"}))
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    got = chunks(response.text)
    assert [c if c == "[DONE]" else c["type"] for c in got] == [
        "start", "start-step", "text-start", "text-delta", "text-delta", "text-end", "finish-step", "finish", "[DONE]",
    ]  # fmt: skip
    assert "".join(c["delta"] for c in got if c != "[DONE]" and c["type"] == "text-delta") == "one two"
    finish = got[-2]
    assert finish["finishReason"] == "stop" and finish["messageMetadata"]["usage"]["completion_tokens"] == 2
    assert simulator.requests[-1].json["messages"] == [
        {"role": "user", "content": "Earlier question"},
        {"role": "assistant", "content": "Earlier"},
        {"role": "user", "content": "echo:one two"},
    ]


def test_content_filter_finish_and_errors_after_the_start(gateway: RunningServer) -> None:
    filtered = chunks(
        httpx.post(gateway.url + UI, json=ui_body({"type": "text", "text": "echo:x[sim: finish=content_filter]"})).text
    )
    assert filtered[-2]["finishReason"] == "content-filter"
    broken = chunks(
        httpx.post(gateway.url + UI, json=ui_body({"type": "text", "text": "echo:a b c[sim: cut_after=2]"})).text
    )
    assert (
        broken[-2]["type"] == "error" and "upstream_disconnected" in broken[-2]["errorText"] and broken[-1] == "[DONE]"
    )


@pytest.mark.parametrize(
    "part", [{"type": "file", "url": "data:,x", "mediaType": "text/plain"}, {"type": "tool-weather"}]
)
def test_parts_chatsse_cannot_relay_are_422_naming_them(
    gateway: RunningServer, simulator: Simulator, part: dict[str, Any]
) -> None:
    response = httpx.post(gateway.url + UI, json=ui_body({"type": "text", "text": "hi"}, part))
    assert response.status_code == 422 and f'"{part["type"]}"' in response.json()["error"]["message"]
    assert simulator.requests == []


def test_resume_is_204_without_an_active_reply(make_gateway: GatewayFactory, gateway: RunningServer) -> None:
    assert httpx.get(gateway.url + UI + "/chat-1/stream").status_code == 204  # resume off
    resumable = make_gateway(resume_seconds=30)
    httpx.post(resumable.url + UI, json=ui_body({"type": "text", "text": "echo:done already"}, chat_id="c9"))
    assert httpx.get(resumable.url + UI + "/c9/stream").status_code == 204  # that reply has finished
    assert httpx.get(resumable.url + UI + "/never-seen/stream").status_code == 204


def test_reasoning_is_relayed_only_where_the_model_group_allows_it(
    make_gateway: GatewayFactory, gateway: RunningServer
) -> None:
    thinking = make_gateway(reasoning=True)
    body = ui_body({"type": "text", "text": "echo:one two[sim: reasoning=3]"})
    got = chunks(httpx.post(thinking.url + UI, json=body).text)
    assert [c if c == "[DONE]" else c["type"] for c in got] == [
        "start", "start-step",
        "reasoning-start", "reasoning-delta", "reasoning-delta", "reasoning-delta", "reasoning-end",
        "text-start", "text-delta", "text-delta", "text-end",
        "finish-step", "finish", "[DONE]",
    ]  # fmt: skip
    assert (
        "".join(c["delta"] for c in got if c != "[DONE]" and c["type"] == "reasoning-delta")
        == "thought0 thought1 thought2"
    )
    native = httpx.post(thinking.url + "/api/v1/chat/stream", json={"message": "echo:hi[sim: reasoning=2]"}).text
    assert native.startswith(
        'data: {"reasoning":"thought0"}\n\ndata: {"reasoning":" thought1"}\n\ndata: {"content":"hi"}'
    )
    plain = chunks(httpx.post(gateway.url + UI, json=body).text)  # the default: a model's thoughts stay upstream
    assert not any(c != "[DONE]" and c["type"].startswith("reasoning") for c in plain)


def test_delete_stops_the_chats_reply(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(resume_seconds=30)
    body = ui_body({"type": "text", "text": "echo:a b c d[sim: hold_after=1 hold=ui-stop]"}, chat_id="chat-stop")
    with httpx.stream("POST", gateway.url + UI, json=body) as response:
        reads = response.iter_text()
        seen = next(reads)
        while '"text-delta"' not in seen:
            seen += next(reads)
        stopped = httpx.delete(f"{gateway.url}{UI}/chat-stop/stream")
        rest = "".join(reads)
    assert stopped.status_code == 204
    upstream = simulator.requests[-1]
    assert wait_until(lambda: upstream.peer_closed_at is not None, timeout=5)  # the simulator hears it a moment later
    assert upstream.finished_at is None
    finish = [c for c in chunks(seen + rest) if c != "[DONE]" and c["type"] == "finish"]
    assert finish == [{"type": "finish", "finishReason": "other", "messageMetadata": {"finishReason": "stopped"}}]
    assert httpx.delete(f"{gateway.url}{UI}/chat-stop/stream").status_code == 204  # nothing open: still 204


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_tool_calls_become_the_ai_sdks_tool_parts(gateway: RunningServer, simulator: Simulator) -> None:
    body = {**ui_body({"type": "text", "text": "Weather? [sim: tools=2 arg_pieces=3,0]"}), "tools": [WEATHER]}
    got = chunks(httpx.post(gateway.url + UI, json=body).text)
    assert [c if c == "[DONE]" else c["type"] for c in got] == [
        "start", "start-step",
        "tool-input-start", "tool-input-delta", "tool-input-delta",
        "tool-input-start", "tool-input-delta", "tool-input-delta",
        "tool-input-available", "tool-input-available",
        "finish-step", "finish", "[DONE]",
    ]  # fmt: skip
    starts = [c for c in got if c != "[DONE]" and c["type"] == "tool-input-start"]
    assert starts == [
        {"type": "tool-input-start", "toolCallId": "call_sim0", "toolName": "get_weather"},
        {"type": "tool-input-start", "toolCallId": "call_sim1", "toolName": "get_weather"},
    ]
    deltas = "".join(c["inputTextDelta"] for c in got if c != "[DONE]" and c["type"] == "tool-input-delta")
    assert deltas == '{"city":"sim"}' * 2  # the pieces as they came (the empty one is not sent)
    available = [c for c in got if c != "[DONE]" and c["type"] == "tool-input-available"]
    assert available[0] == {
        "type": "tool-input-available", "toolCallId": "call_sim0", "toolName": "get_weather", "input": {"city": "sim"},
    }  # fmt: skip
    assert got[-2]["finishReason"] == "tool-calls" and simulator.requests[-1].json["tools"] == [WEATHER]


def test_broken_tool_arguments_are_a_tool_input_error(gateway: RunningServer) -> None:
    body = {**ui_body({"type": "text", "text": "echo:{not json[sim: tools=1]"}), "tools": [WEATHER]}
    got = chunks(httpx.post(gateway.url + UI, json=body).text)
    errors = [c for c in got if c != "[DONE]" and c["type"] == "tool-input-error"]
    assert errors and errors[0]["input"] == "{not json" and errors[0]["toolName"] == "get_weather"


def test_images_and_tool_results_become_the_upstreams_turns(gateway: RunningServer, simulator: Simulator) -> None:
    photo = "data:image/png;base64,iVBORw0KGgo="
    history: list[dict[str, Any]] = [
        {"id": "u0", "role": "user", "parts": [
            {"type": "text", "text": "Weather in Oslo?"}, {"type": "file", "mediaType": "image/png", "url": photo},
        ]},
        {"id": "a0", "role": "assistant", "parts": [
            {"type": "step-start"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool-get_weather", "toolCallId": "c1", "state": "output-available",
             "input": {"city": "Oslo"}, "output": {"temp": 21}},
            {"type": "tool-get_weather", "toolCallId": "c2", "state": "input-available", "input": {"city": "Bergen"}},
            {"type": "step-start"},
            {"type": "text", "text": "It is 21 degrees."},
        ]},
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "echo:thanks"}]},
    ]  # fmt: skip
    response = httpx.post(gateway.url + UI, json={"id": "t", "messages": history, "tools": [WEATHER]})
    assert response.status_code == 200
    assert simulator.requests[-1].json["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "Weather in Oslo?"}, {"type": "image_url", "image_url": {"url": photo}},
        ]},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        ]},  # the call without a result (c2) is left out: the upstream would refuse it
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp":21}'},
        {"role": "assistant", "content": "It is 21 degrees."},
        {"role": "user", "content": "echo:thanks"},
    ]  # fmt: skip
    continued = history[:2]  # what useChat sends after addToolOutput: the assistant message is the last one
    continued[1] = {**history[1], "parts": history[1]["parts"][:3]}
    reply = chunks(httpx.post(gateway.url + UI, json={"id": "t", "messages": continued, "messageId": "a0"}).text)
    assert reply[0] == {"type": "start", "messageId": "a0"}  # the same assistant message goes on
    assert (
        "".join(c["delta"] for c in reply if c != "[DONE]" and c["type"] == "text-delta")
        == 'The tool said: {"temp":21}'
    )
