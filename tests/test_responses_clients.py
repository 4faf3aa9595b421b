"""The Responses API face with the clients that call it by default: the OpenAI Agents SDK and LangChain; and the
pieces under it: reading an upstream's events split anywhere, and the `protocol` setting."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI

from chatsse.events import Done, Passthrough
from chatsse.responses.translate import ResponsesTranslator
from chatsse.settings import ConfigError, Settings
from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.test_node_clients import run

set_tracing_disabled(True)  # the Agents SDK would send its traces to OpenAI


@pytest.fixture(params=["chat", "responses"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_the_agents_sdk_runs_a_tool_round_trip_streamed(
    make_gateway: GatewayFactory, simulator: Simulator, protocol: str
) -> None:
    gateway = make_gateway(api="azure-v1", protocol=protocol)
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    agent = Agent(
        name="weather",
        instructions="Answer with the tool.",
        model=OpenAIResponsesModel(model="default", openai_client=client),
        tools=[get_weather],
    )
    result = Runner.run_streamed(agent, "Weather in Paris? [sim: tools=1]")
    deltas = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
    await client.close()
    assert asked == ["sim"]
    assert result.final_output == "The tool said: sunny in sim" == "".join(deltas)
    assert len(simulator.requests) == 2


def test_the_ai_sdks_openai_provider_streams_text_with_a_tool(
    node_modules: Path, make_gateway: GatewayFactory, simulator: Simulator, protocol: str
) -> None:
    gateway = make_gateway(api="azure-v1", protocol=protocol)
    result = run("responses.mjs", gateway.url, "Weather in Paris? [sim: tools=1]")
    assert result["asked"] == ["sim"] and result["text"] == "The tool said: sunny in sim"
    assert result["finishes"] == ["tool-calls", "stop"] and result["usage"]["outputTokens"] > 0
    assert all(
        request.path.endswith("/" + ("responses" if protocol == "responses" else "chat/completions"))
        for request in simulator.requests
    )
    assert len(simulator.requests) == 2


def test_use_chat_over_a_responses_upstream(node_modules: Path, make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(api="azure-v1", protocol="responses", reasoning=True)
    result = run("ui.mjs", gateway.url, "reply", "echo:from Responses 😀[sim: reasoning=2]")
    assert result["text"] == "from Responses 😀" and result["reasoning"] == "thought0 thought1"
    assert result["metadata"]["usage"]["completion_tokens"] > 0
    tools = run("tools.mjs", gateway.url, "Weather in Oslo? [sim: tools=1]")
    assert tools["outcome"] == "settled"
    assert tools["calls"] == [{"toolName": "get_weather", "toolCallId": "call_sim0", "input": {"city": "sim"}}]
    assert [p for p in tools["parts"] if p["type"] == "text"][-1]["text"] == 'The tool said: {"temp":21,"sky":"clear"}'


def test_codex_cli_through_the_gateway(node_modules: Path, make_gateway: GatewayFactory, tmp_path: Path) -> None:
    """Codex CLI speaks only the Responses API, with built-in tools: it needs an upstream speaking Responses."""
    gateway = make_gateway(api="azure-v1", protocol="responses", api_keys=("codex-caller",))
    home = tmp_path / "codex"
    home.mkdir()
    (home / "config.toml").write_text(
        'model = "default"\nmodel_provider = "chatsse"\ncheck_for_update_on_startup = false\n\n'
        '[analytics]\nenabled = false\n\n[model_providers.chatsse]\nname = "chatsse"\n'
        f'base_url = "{gateway.url}/v1"\nenv_key = "CHATSSE_CALLER_KEY"\nwire_api = "responses"\n'
    )  # nothing but the gateway on 127.0.0.1: no update check, no analytics
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CODEX_HOME": str(home)}

    def codex(prompt: str, key: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(node_modules / ".bin" / "codex"), "exec", "--skip-git-repo-check", prompt],
            cwd=tmp_path,
            env={**env, "CHATSSE_CALLER_KEY": key},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )

    result = codex("echo:Hello from Codex 😀", "codex-caller")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "Hello from Codex 😀"
    refused = codex("echo:no key", "wrong")
    assert refused.returncode != 0 and "401" in refused.stderr


def test_langchain_chat_openai_on_the_responses_api(make_gateway: GatewayFactory, protocol: str) -> None:
    gateway = make_gateway(api="azure-v1", protocol=protocol)
    with httpx.Client() as http:  # closed here, so no pooled socket is left to the collector
        model = ChatOpenAI(
            model="default",
            base_url=gateway.url + "/v1",
            api_key="unused",  # type: ignore[arg-type]
            use_responses_api=True,
            max_retries=0,
            http_client=http,
        )
        reply = model.invoke("echo:LangChain on Responses")
        assert reply.text == "LangChain on Responses"
        streamed = "".join(chunk.text for chunk in model.stream("echo:one two three"))
        assert streamed == "one two three"


STREAM = (
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1",'
    '"status":"in_progress","model":"m"}}\n\n'
    'event: response.output_item.added\ndata: {"type":"response.output_item.added","sequence_number":1,'
    '"output_index":0,"item":{"id":"msg_1","type":"message","content":[]}}\n\n'
    'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":2,'
    '"item_id":"msg_1","output_index":0,"content_index":0,"delta":"h\\u00e9llo \\ud83d\\ude00"}\n\n'
    'event: response.sim_unknown\ndata: {"type":"response.sim_unknown","sequence_number":3,"x":"caf\\u00e9 ☕"}\n\n'
    'event: response.completed\ndata: {"type":"response.completed","sequence_number":4,"response":{"id":"resp_1",'
    '"status":"completed","usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":2},"output_tokens":3,'
    '"output_tokens_details":{"reasoning_tokens":1},"total_tokens":10}}}\n\n'
).encode()


def _read(pieces: list[bytes], passthrough: bool) -> tuple[list[Any], ResponsesTranslator]:
    from chatsse.sse import SSEDecoder

    decoder, translator = SSEDecoder(), ResponsesTranslator(rich=True, passthrough=passthrough)
    out: list[Any] = []
    for piece in pieces:
        out += translator.feed(decoder.decode(piece))
    translator.end_of_stream()
    return out, translator


def test_events_split_at_every_byte_offset_read_the_same() -> None:
    for passthrough in (True, False):
        whole, _ = _read([STREAM], passthrough)
        for offset in range(1, len(STREAM)):
            events, translator = _read([STREAM[:offset], STREAM[offset:]], passthrough)
            assert events == whole, offset
            assert translator.failure is None and translator.response_id == "resp_1"
            assert translator.usage is not None and translator.usage["prompt_tokens"] == 7
            assert translator.usage["prompt_tokens_details"] == {"cached_tokens": 2}
    relayed, _ = _read([STREAM], True)
    assert [e.kind for e in relayed if isinstance(e, Passthrough)][-2:] == [
        "response.sim_unknown",
        "response.completed",
    ]
    unknown = next(e for e in relayed if isinstance(e, Passthrough) and e.kind == "response.sim_unknown")
    assert unknown.data == '{"type":"response.sim_unknown","sequence_number":3,"x":"caf\\u00e9 ☕"}'  # as it came
    typed, _ = _read([STREAM], False)
    assert [getattr(e, "text", None) for e in typed if not isinstance(e, Done)] == ["héllo 😀"]


def test_a_stream_that_ends_before_completed_is_truncated() -> None:
    events, translator = _read([STREAM[: STREAM.index(b"event: response.completed")]], False)
    assert translator.failure is not None and translator.failure.code == "upstream_disconnected"
    assert not any(isinstance(e, Done) for e in events)


def load(tmp_path: Path, table: str, **env: str) -> Settings:
    path = tmp_path / "chatsse.toml"
    path.write_text(f'[[upstream]]\nname = "codex"\nendpoint = "https://x.openai.azure.com"\nauth = "entra"\n{table}')
    return Settings.from_env({"CHATSSE_CONFIG": str(path), **env}, env_file=None)


def test_the_protocol_setting(tmp_path: Path) -> None:
    v1 = load(tmp_path, 'deployment = "d"\napi = "azure-v1"\nprotocol = "responses"\n')
    assert v1.upstreams[0].protocol == "responses"
    dated = load(tmp_path, 'deployment = "d"\nprotocol = "responses"\napi_version = "2025-04-01-preview"\n')
    assert dated.upstreams[0].protocol == "responses"
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, 'deployment = "d"\nprotocol = "responses"\n')  # the default api-version, 2024-10-21
    message = str(refused.value)
    assert str(tmp_path / "chatsse.toml") in message and "[[upstream]] #1 ('codex')" in message
    assert 'protocol = "responses"' in message and "2024-10-21 has no Responses API" in message
    with pytest.raises(ConfigError, match="protocol = 'grpc' is not valid"):
        load(tmp_path, 'deployment = "d"\nprotocol = "grpc"\n')
    env = {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "AZURE_OPENAI_API_KEY": "k"}
    env |= {"AZURE_OPENAI_DEPLOYMENT_NAME": "d", "AZURE_OPENAI_PROTOCOL": "responses"}
    one = Settings.from_env(env, env_file=None).upstreams[0]
    assert (one.protocol, one.api) == ("responses", "azure-v1")
    with pytest.raises(ConfigError, match="AZURE_OPENAI_PROTOCOL"):
        Settings.from_env({**env, "AZURE_OPENAI_API_VERSION": "2024-10-21"}, env_file=None)
