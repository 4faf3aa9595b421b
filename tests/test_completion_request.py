"""What `/v1/chat/completions` takes, on the wire through a real gateway: every field passed through unchanged to the
v1 and OpenAI-compatible APIs, dropped or refused by a dated api-version that lacks it, cheap checks answered in
OpenAI's 400 shape naming the field (with no upstream call), the body limit that fits images, and failover that
stays before the first byte with tools as with text."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.servers import Fleet

COMPLETIONS = "/v1/chat/completions"
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}
# One of every field, as an SDK would send it (values chosen to be valid, not sensible).
EVERY_FIELD: dict[str, Any] = {
    "tools": [TOOL],
    "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    "parallel_tool_calls": False,
    "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}},
    "stop": ["\n\n", "END"],
    "seed": 42,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 3,
    "user": "user-1234",
    "n": 2,
    "temperature": 0.2,
    "top_p": 0.9,
    "reasoning_effort": "low",
    "prediction": {"type": "content", "content": "draft"},
    "metadata": {"team": "docs"},
    "store": True,
    "modalities": ["text"],
    "service_tier": "auto",
    "verbosity": "low",
    "prompt_cache_key": "k1",
    "safety_identifier": "s1",
}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "default", "messages": [{"role": "user", "content": "echo:hi"}], **fields}


def test_every_field_reaches_a_v1_and_an_openai_upstream_unchanged(fleet: Fleet) -> None:
    fleet.sim("v1")
    fleet.sim("compatible")
    gateway = fleet.gateway(fleet.upstream("v1", api="azure-v1"), fleet.upstream("compatible", model="m", api="openai"))
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be terse."}]},
        {"role": "user", "content": "echo:hi", "name": "ann"},
    ]
    for model, name in (("default", "v1"), ("m", "compatible")):
        response = httpx.post(
            gateway.url + COMPLETIONS,
            json={**EVERY_FIELD, "model": model, "messages": messages, "max_completion_tokens": 9, "max_tokens": 20},
        )
        assert response.status_code == 200, response.text
        sent = fleet.sims[name].requests[-1].json
        assert {key: sent[key] for key in EVERY_FIELD} == EVERY_FIELD
        assert sent["messages"] == messages  # the developer role and the content parts as they came
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert fleet.sims["v1"].requests[-1].json["max_completion_tokens"] == 9  # the smaller of the two caps
    assert fleet.sims["compatible"].requests[-1].json["max_tokens"] == 9  # by the name Ollama and vLLM know


def test_a_dated_api_version_drops_or_refuses_what_it_lacks(fleet: Fleet) -> None:
    fleet.sim("old")
    fleet.sim("ga")
    gateway = fleet.gateway(
        fleet.upstream("old", model="old", api_version="2024-06-01"),
        fleet.upstream("ga", model="ga", api_version="2024-10-21"),
    )
    url = gateway.url + COMPLETIONS
    messages = [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "echo:hi"}]
    kept = httpx.post(url, json={"model": "old", "messages": messages, "store": True, "metadata": {"a": "b"}})
    assert kept.status_code == 200
    sent = fleet.sims["old"].requests[-1].json
    assert "store" not in sent and "metadata" not in sent and "stream_options" not in sent  # dropped, not refused
    assert sent["messages"][0] == {"role": "system", "content": "Be terse."}
    before = fleet.counts()
    for model, field, value in (
        ("old", "reasoning_effort", "low"),
        ("old", "parallel_tool_calls", False),
        ("old", "response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
        ("ga", "prediction", {"type": "content", "content": "draft"}),
        ("ga", "verbosity", "low"),
    ):
        refused = httpx.post(url, json={**body(model=model), field: value})
        error = refused.json()["error"]
        assert (refused.status_code, error["code"], error["param"]) == (400, "unsupported_parameter", field)
        assert "api-version" in error["message"]
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    refused = httpx.post(url, json=body(model="ga", messages=[{"role": "user", "content": [audio]}]))
    assert refused.json()["error"]["param"] == "messages[0].content[0].input_audio"
    assert fleet.counts() == before  # refused before any upstream call
    whole = httpx.post(url, json={**body(model="ga"), "response_format": {"type": "json_object"}, "seed": 1})
    assert whole.status_code == 200 and fleet.sims["ga"].requests[-1].json["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 0}, "n"),
        ({"n": 1.5}, "n"),
        ({"temperature": 7}, "temperature"),
        ({"top_p": "all"}, "top_p"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": "42"}, "seed"),
        ({"logit_bias": {"x": 1}}, "logit_bias"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools[0].function.name"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"metadata": {"a": 1}}, "metadata"),
        ({"stream_options": {"include_usage": True, "chunk_size": 5}}, "stream_options.chunk_size"),
        ({"stream": "yes"}, "stream"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]}, "messages[0].content[0].type"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x", "detail": "4k"}}],
                    }
                ]
            },
            "messages[0].content[0].image_url.detail",
        ),
        ({"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"type": "function", "id": "c"}]}]},
            "messages[0].tool_calls[0].function",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]},
            "messages[0].content[0].type",
        ),
        ({"temprature": 0.5}, "temprature"),
    ],
)
def test_cheap_checks_are_openai_400s_naming_the_field(
    make_gateway: GatewayFactory, simulator: Simulator, fields: dict[str, Any], param: str
) -> None:
    response = httpx.post(make_gateway().url + COMPLETIONS, json=body(**fields))
    error = response.json()["error"]
    assert (response.status_code, error["type"], error["param"]) == (400, "invalid_request_error", param), error
    assert simulator.requests == []


def test_nulls_mean_not_sent_and_every_message_shape_passes(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Look up cats"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"cats"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "cats are cats"}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}], "refusal": "No."},
        {"role": "user", "content": "echo:ok", "name": "bob"},
    ]
    fields = {"messages": messages, "tools": [TOOL], "n": None, "stop": None, "temperature": None, "seed": None}
    response = httpx.post(make_gateway().url + COMPLETIONS, json=body(**fields))
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "ok"
    sent = simulator.requests[-1].json
    assert sent["messages"] == messages and not {"n", "stop", "temperature", "seed"} & set(sent)


def test_the_body_limit_fits_images_on_the_routes_that_take_them(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway()  # the defaults: 8 MiB here, 64 KiB on the native route
    photo = f"data:image/jpeg;base64,{base64.b64encode(bytes(3 * 1024 * 1024)).decode()}"
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": photo}}]
    accepted = httpx.post(gateway.url + COMPLETIONS, json=body(messages=[{"role": "user", "content": content}]))
    assert accepted.status_code == 200 and "image/jpeg of 3145728 bytes" in accepted.text
    upstream = simulator.requests[0]  # sent in pieces to aiohttp, but as one body with its length, never chunked
    assert int(upstream.headers["content-length"]) == len(upstream.body) > 4_000_000
    assert "transfer-encoding" not in upstream.headers
    ui = {"id": "c", "messages": [{"id": "u", "role": "user", "parts": [
        {"type": "text", "text": "And this?"}, {"type": "file", "mediaType": "image/jpeg", "url": photo},
    ]}]}  # fmt: skip
    assert httpx.post(gateway.url + "/api/v1/chat/ui", json=ui).status_code == 200
    too_big = httpx.post(gateway.url + COMPLETIONS, json=body(messages=[{"role": "user", "content": content * 3}]))
    assert too_big.status_code == 413 and "CHATSSE_MAX_MEDIA_BODY_BYTES" in too_big.json()["error"]["message"]
    native = httpx.post(gateway.url + "/api/v1/chat/stream", json={"message": "x" * 70_000})
    assert native.status_code == 413 and "CHATSSE_MAX_BODY_BYTES" in native.json()["error"]["message"]
    assert len(simulator.requests) == 2


def test_failover_with_tools_stays_before_the_first_byte(fleet: Fleet) -> None:
    fleet.sim("busy", always="status=429 retry_after=30")
    fleet.sim("spare")
    fleet.sim("broken", always="cut_after=2")
    gateway = fleet.gateway(fleet.upstream("busy"), fleet.upstream("spare", priority=1))
    request = body(messages=[{"role": "user", "content": "Look it up [sim: tools=1]"}], tools=[TOOL], stream=True)
    response = httpx.post(gateway.url + COMPLETIONS, json=request)
    assert response.headers["x-chatsse-upstream"] == "spare" and '"name":"lookup"' in response.text
    assert fleet.sims["spare"].requests[-1].json["tools"] == [TOOL]
    cut = fleet.gateway(fleet.upstream("broken"), fleet.upstream("spare", priority=1))
    broken = httpx.post(cut.url + COMPLETIONS, json=request)  # the call started on "broken": never replayed
    assert broken.headers["x-chatsse-upstream"] == "broken" and '"upstream_disconnected"' in broken.text
    assert fleet.counts() == {"busy": 1, "spare": 1, "broken": 1}
