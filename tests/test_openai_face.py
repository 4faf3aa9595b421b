"""The OpenAI-compatible face through the real `openai` Python SDK against a live gateway and the simulator."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.servers import RunningServer

CALLER = "caller-key-for-sdk-7f3a"
REPLY = "Hello from the OpenAI face 😀, line two\nand more."


@pytest.fixture
def keyed(make_gateway: GatewayFactory) -> RunningServer:
    return make_gateway(api_keys=(CALLER,))


OPENED: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Each test's SDK clients closed after it, so no pooled socket is left to the collector (a ResourceWarning in
    whichever later test collects it)."""
    yield
    while OPENED:
        OPENED.pop().close()


def client(gateway: RunningServer, key: str = CALLER) -> openai.OpenAI:
    opened = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)
    OPENED.append(opened)
    return opened


def test_streaming_gives_exactly_the_reply_and_usage_when_asked(keyed: RunningServer, simulator: Simulator) -> None:
    stream = client(keyed).chat.completions.create(
        model="default",
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": f"echo:{REPLY}"}],
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.3,
        max_completion_tokens=50,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    sent = simulator.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (sent["temperature"], sent["max_completion_tokens"]) == (0.3, 50)


def test_without_stream_one_completion_object(keyed: RunningServer) -> None:
    completion = client(keyed).chat.completions.create(
        model="default", messages=[{"role": "user", "content": f"echo:{REPLY}"}]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == REPLY and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_reasoning_arrives_as_reasoning_content(make_gateway: GatewayFactory) -> None:
    sdk = client(make_gateway(api_keys=(CALLER,), reasoning=True))
    ask: list[ChatCompletionMessageParam] = [{"role": "user", "content": "echo:the answer[sim: reasoning=2]"}]
    chunks = list(sdk.chat.completions.create(model="default", messages=ask, stream=True))
    extras = [chunk.choices[0].delta.model_extra or {} for chunk in chunks if chunk.choices]
    assert "".join(extra.get("reasoning_content") or "" for extra in extras) == "thought0 thought1"
    whole = sdk.chat.completions.create(model="default", messages=ask)
    assert whole.choices[0].message.content == "the answer"
    assert (whole.choices[0].message.model_extra or {})["reasoning_content"] == "thought0 thought1"


def test_models_lists_the_groups(keyed: RunningServer) -> None:
    assert [model.id for model in client(keyed).models.list()] == ["default"]


def test_errors_are_the_sdks_own(keyed: RunningServer, simulator: Simulator) -> None:
    sdk = client(keyed)
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    with pytest.raises(openai.AuthenticationError):
        client(keyed, "wrong-key").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], extra_body={"temprature": 0.5}
        )
    assert bad.value.param == "temprature" and "temprature" in bad.value.message
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}], temperature=7)
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi [sim: status=429 retry_after=30]"}]
        )
    assert limited.value.response.headers["retry-after"] == "30"
    with pytest.raises(openai.APIError):  # a reply that breaks off mid-stream surfaces as the SDK's error
        list(
            sdk.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "echo:a b c d[sim: error_after=2]"}], stream=True
            )
        )
    assert all(
        r.json["messages"][-1]["content"] != "hi" or "sim:" in r.json["messages"][-1]["content"]
        for r in simulator.requests
    )


def test_the_caller_rate_limit_is_a_rate_limit_error(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(api_keys=(CALLER,), rate_limit=(1, 60.0))
    sdk = client(gateway)
    sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "echo:one"}])
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "echo:two"}])
    assert limited.value.code == "too_many_requests" and int(limited.value.response.headers["retry-after"]) >= 1


def test_openai_error_shape_on_the_wire(keyed: RunningServer) -> None:
    response = httpx.post(
        keyed.url + "/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "hi"}], "n": 0},
        headers={"authorization": f"Bearer {CALLER}"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["request_id"] == response.headers["x-request-id"]
