"""The OpenAI face as a drop-in, through the real `openai` SDK and LangChain against a live gateway and the simulator:
tool calls (streamed, assembled by the SDK's own helpers, and a whole round trip), structured output, images, `n`,
logprobs, refusals and the usage chunk."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import BaseModel

from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory

CALLER = "caller-key-dropin-5c1e"
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}},
}
PNG = base64.b64encode(bytes(range(68))).decode()


class Forecast(BaseModel):
    city: str
    high: float
    rain: bool
    hours: list[int]


@pytest.fixture
def sdk(make_gateway: GatewayFactory) -> Iterator[openai.OpenAI]:
    gateway = make_gateway(api_keys=(CALLER,))
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=CALLER, max_retries=0, timeout=30) as client:
        yield client  # closed after the test, so its pooled socket is never left to the collector


def ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def test_streamed_tool_calls_are_assembled_by_the_sdks_stream_helper(sdk: openai.OpenAI, simulator: Simulator) -> None:
    with sdk.chat.completions.stream(
        model="default", messages=ask("Weather and time? [sim: tools=2 arg_pieces=1,0,3,0]"), tools=[WEATHER, TIME]
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "sim", "unit": "celsius"}),
        ("get_time", {"zone": "sim"}),
    ]
    assert [c.id for c in calls] == ["call_sim0", "call_sim1"]
    assert calls[0].function.parsed_arguments == {"city": "sim", "unit": "celsius"}
    assert events.count("tool_calls.function.arguments.done") == 2
    sent = simulator.requests[-1].json
    assert sent["tools"] == [WEATHER, TIME]  # passed through as sent


def test_a_whole_tool_round_trip(sdk: openai.OpenAI, simulator: Simulator) -> None:
    messages: list[Any] = ask("What is the weather in Oslo? [sim: tools=1]")
    first = sdk.chat.completions.create(model="default", messages=messages, tools=[WEATHER], tool_choice="auto")
    call = (first.choices[0].message.tool_calls or [])[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.type == "function"
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'})
    second = sdk.chat.completions.create(model="default", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == 'The tool said: {"temp": 21}'
    assert second.choices[0].finish_reason == "stop"
    sent = simulator.requests[-1].json["messages"]
    assert sent == messages  # the assistant's tool_calls turn and the tool's result, forwarded unchanged
    assert sent[1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"sim","unit":"celsius"}',
    }


def test_structured_output_parses_into_the_pydantic_model(sdk: openai.OpenAI, simulator: Simulator) -> None:
    completion = sdk.beta.chat.completions.parse(
        model="default", messages=ask("Forecast for Oslo"), response_format=Forecast
    )
    assert completion.choices[0].message.parsed == Forecast(city="sim", high=1.5, rain=True, hours=[1])
    response_format = simulator.requests[-1].json["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["name"] == "Forecast"
    with sdk.chat.completions.stream(model="default", messages=ask("Again"), response_format=Forecast) as stream:
        streamed = stream.get_final_completion()
    assert streamed.choices[0].message.parsed == Forecast(city="sim", high=1.5, rain=True, hours=[1])


def test_image_parts_are_forwarded_as_sent(sdk: openai.OpenAI, simulator: Simulator) -> None:
    content: Any = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
        {"type": "text", "text": " And this one?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    reply = sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": content}])
    text = reply.choices[0].message.content or ""
    assert "I see 2 image(s): image/png of 68 bytes (detail high); example.com image (detail auto)." in text
    assert simulator.requests[-1].json["messages"] == [{"role": "user", "content": content}]  # never joined


def test_n_choices_streamed_and_whole(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="default", messages=ask("echo:a b"), n=3, stream=True))
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: "a b", 1: "a b #1", 2: "a b #2"} and finishes == {0: "stop", 1: "stop", 2: "stop"}
    whole = sdk.chat.completions.create(model="default", messages=ask("echo:a b"), n=2)
    assert [(c.index, c.message.content, c.finish_reason) for c in whole.choices] == [
        (0, "a b", "stop"),
        (1, "a b #1", "stop"),
    ]


def test_logprobs_are_relayed(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="default", messages=ask("echo:one two"), logprobs=True, top_logprobs=2, stream=True
        )
    )
    tokens = [
        lp.token for c in chunks if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.content or []
    ]
    assert tokens == ["one", " two"]
    whole = sdk.chat.completions.create(model="default", messages=ask("echo:one two"), logprobs=True, top_logprobs=2)
    content = (whole.choices[0].logprobs and whole.choices[0].logprobs.content) or []
    assert [(lp.token, len(lp.top_logprobs)) for lp in content] == [("one", 2), (" two", 2)]


def test_refusals_are_relayed(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(model="default", messages=ask("echo:I can't help[sim: refusal=1]"), stream=True)
    )
    refused = "".join(c.choices[0].delta.refusal or "" for c in chunks if c.choices)
    assert refused == "I can't help" and all(not (c.choices and c.choices[0].delta.content) for c in chunks)
    whole = sdk.chat.completions.create(model="default", messages=ask("echo:I can't help[sim: refusal=1]"))
    assert whole.choices[0].message.refusal == "I can't help" and whole.choices[0].message.content is None


def test_the_usage_chunk_only_when_asked_and_the_prompt_filter_results_once(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    body = {"model": "default", "messages": ask("echo:a b"), "stream": True, "tools": [WEATHER]}
    plain = httpx.post(gateway.url + "/v1/chat/completions", json=body).text
    asked = httpx.post(
        gateway.url + "/v1/chat/completions", json={**body, "stream_options": {"include_usage": True}}
    ).text
    chunks = [json.loads(line[6:]) for line in asked.splitlines() if line.startswith("data: {")]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert '"usage"' not in plain
    # Azure's all-clear results on every token are not repeated; the prompt's come once, in a chunk of their own.
    assert plain.count("content_filter_results") == 1  # the one inside prompt_filter_results
    assert plain.count("prompt_filter_results") == 1 and asked.count("prompt_filter_results") == 1


def test_langchain_binds_tools_streamed_and_not(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(api_keys=(CALLER,))
    model = ChatOpenAI(base_url=gateway.url + "/v1", api_key=CALLER, model="default", max_retries=0)  # type: ignore[arg-type]

    def get_weather(city: str, unit: str) -> str:
        """The weather in a city, in celsius or fahrenheit."""
        return "sunny"

    bound = model.bind_tools([get_weather])
    message = bound.invoke("Weather in Oslo? [sim: tools=1]")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "sim", "unit": "sim"})]
    assert simulator.requests[-1].json["tools"][0]["function"]["name"] == "get_weather"
    gathered: AIMessageChunk | None = None
    for chunk in bound.stream("Weather in Oslo? [sim: tools=1 arg_pieces=2,0,1]"):
        assert isinstance(chunk, AIMessageChunk)
        gathered = chunk if gathered is None else gathered + chunk
    assert gathered is not None
    assert [(c["name"], c["args"]) for c in gathered.tool_calls] == [("get_weather", {"city": "sim", "unit": "sim"})]
    plain = model.invoke("echo:just text")
    assert plain.content == "just text"


def test_the_deprecated_functions_still_work(sdk: openai.OpenAI, simulator: Simulator) -> None:
    functions: Any = [WEATHER["function"]]
    whole = sdk.chat.completions.create(model="default", messages=ask("Oslo? [sim: tools=1]"), functions=functions)
    call = whole.choices[0].message.function_call
    assert whole.choices[0].finish_reason == "function_call" and call is not None
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "sim", "unit": "celsius"})
    assert simulator.requests[-1].json["functions"] == functions
    chunks = list(
        sdk.chat.completions.create(
            model="default", messages=ask("Oslo? [sim: tools=1 arg_pieces=4]"), functions=functions, stream=True
        )
    )
    pieces = [c.choices[0].delta.function_call for c in chunks if c.choices and c.choices[0].delta.function_call]
    assert pieces[0].name == "get_weather" and "".join(p.arguments or "" for p in pieces) == call.arguments
