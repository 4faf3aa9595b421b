"""Real JavaScript client libraries against a live gateway: the AI SDK's DefaultChatTransport and readUIMessageStream
(what useChat runs), and the npm `openai` package. They are installed from tests/node/package-lock.json."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from chatsse.simulator import Simulator
from tests.conftest import NODE, GatewayFactory
from tests.servers import RunningServer, wait_until

WORDS = " ".join(f"w{i}" for i in range(12))


def run(script: str, *args: str) -> dict[str, Any]:
    result = subprocess.run(["node", script, *args], cwd=NODE, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def test_use_chat_transport_assembles_the_reply(
    node_modules: Path, gateway: RunningServer, simulator: Simulator
) -> None:
    result = run("ui.mjs", gateway.url, "reply", f"echo:{WORDS} 😀")
    assert result["text"] == f"{WORDS} 😀"
    assert result["id"].startswith("msg-")
    assert result["metadata"]["finishReason"] == "stop" and result["metadata"]["usage"]["completion_tokens"] > 0
    assert simulator.requests[-1].json["messages"] == [{"role": "user", "content": f"echo:{WORDS} 😀"}]


def test_use_chat_abort_stops_the_upstream(node_modules: Path, gateway: RunningServer, simulator: Simulator) -> None:
    result = run("ui.mjs", gateway.url, "abort", f"echo:{WORDS}[sim: delay=0.2]")
    assert result == {"aborted": True}
    upstream = simulator.requests[-1]
    assert wait_until(lambda: upstream.peer_closed_at is not None, timeout=5)
    assert upstream.finished_at is None  # closed early, not finished


def test_use_chat_resume_replays_the_active_reply_then_204(
    node_modules: Path, make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway(resume_seconds=30)
    command = ["node", "ui.mjs", gateway.url, "resume", f"echo:{WORDS}[sim: hold_after=3 hold=ui-resume]"]
    with subprocess.Popen(command, cwd=NODE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "cut"
        assert process.stdout.readline().strip() == "resumed"
        simulator.release("ui-resume")
        out, err = process.communicate(timeout=60)
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"text": WORDS, "none_after": True}, err
    assert len(simulator.requests) == 1


def test_use_chat_errors_surface_as_the_sdks_errors(node_modules: Path, gateway: RunningServer) -> None:
    before = run("ui.mjs", gateway.url, "error", "hi [sim: status=400]")
    assert "content_filter" in before["error"]  # the SDK throws with our JSON error body
    during = run("ui.mjs", gateway.url, "midstream", "echo:a b c[sim: cut_after=2]")
    assert during["text"] == "a b" and "upstream_disconnected" in during["error"]  # the partial reply, then the error


def test_use_chat_gets_reasoning_parts(node_modules: Path, make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(reasoning=True)
    result = run("ui.mjs", gateway.url, "reply", "echo:answer[sim: reasoning=2]")
    assert result["reasoning"] == "thought0 thought1" and result["text"] == "answer"


def test_npm_openai_streams_through_chatsse(node_modules: Path, make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(api_keys=("node-caller",))
    result = run("openai.mjs", gateway.url, "node-caller", f"echo:{WORDS}")
    assert result["text"] == WORDS and result["usage"]["completion_tokens"] == 12 and result["models"] == ["default"]
    refused = run("openai.mjs", gateway.url, "wrong-key", "echo:hi")
    assert refused == {"error": "AuthenticationError", "status": 401}


def test_use_chat_client_side_tool_round_trip(node_modules: Path, gateway: RunningServer, simulator: Simulator) -> None:
    result = run("tools.mjs", gateway.url, "What is the weather in Oslo? [sim: tools=1]")
    assert result["outcome"] == "settled"
    assert result["calls"] == [{"toolName": "get_weather", "toolCallId": "call_sim0", "input": {"city": "sim"}}]
    parts = [p for p in result["parts"] if p["type"] != "step-start"]
    assert parts[0] == {
        "type": "tool-get_weather",
        "toolCallId": "call_sim0",
        "state": "output-available",
        "input": {"city": "sim"},
        "output": {"temp": 21, "sky": "clear"},
    } | {k: v for k, v in parts[0].items() if k not in ("type", "toolCallId", "state", "input", "output")}
    assert parts[-1]["type"] == "text" and parts[-1]["text"] == 'The tool said: {"temp":21,"sky":"clear"}'
    assert result["messages"] == 2  # the user's question and one assistant message holding both steps
    assert result["chunks"][:5] == ["start", "start-step", "tool-input-start", "tool-input-delta", "tool-input-delta"]
    assert "tool-input-available" in result["chunks"] and "text-delta" in result["chunks"]
    first, second = simulator.requests[-2:]
    assert first.json["tools"][0]["function"]["name"] == "get_weather"
    assert second.json["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_sim0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"sim"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_sim0", "content": '{"temp":21,"sky":"clear"}'},
    ]
