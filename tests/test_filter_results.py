"""Azure's content filter results relayed on every face (#34): the OpenAI face as Azure sends them (read through
the openai SDK as Azure's v1 endpoint is, `OpenAI(base_url=...)`, and through `AzureOpenAI` on the Azure-shaped
route, in `model_extra`), the native `done` naming the categories filtered, and useChat's finish with a data part
that names them."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import GatewayFactory
from tests.helpers import STREAM
from tests.servers import RunningServer
from tests.test_ui_face import UI, chunks, ui_body

FILTERED = "echo:some words[sim: finish=content_filter]"


def azure_client(gateway: RunningServer) -> openai.OpenAI:
    # The gateway's OpenAI face, reached as Azure's own v1 endpoint is (https://<resource>.openai.azure.com/openai/v1/).
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="any", max_retries=0)


def test_the_azure_sdk_reads_prompt_and_output_filter_results_streamed_and_whole(gateway: RunningServer) -> None:
    client = azure_client(gateway)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": FILTERED}]
    stream = list(client.chat.completions.create(model="default", messages=messages, stream=True))
    extras = [c.model_extra or {} for c in stream]
    prompt = [extra["prompt_filter_results"] for extra in extras if extra.get("prompt_filter_results")]
    assert len(prompt) == 1 and prompt[0][0]["content_filter_results"]["violence"]["filtered"] is False
    output = [
        (c.choices[0].model_extra or {})["content_filter_results"]
        for c in stream
        if c.choices and (c.choices[0].model_extra or {}).get("content_filter_results")
    ]
    assert output and output[-1]["violence"] == {"filtered": True, "severity": "medium"}
    assert stream[-1].choices[0].finish_reason == "content_filter"
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "some words"

    whole = client.chat.completions.create(model="default", messages=messages)
    assert whole.model_extra is not None and whole.choices[0].model_extra is not None
    assert whole.model_extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert whole.choices[0].model_extra["content_filter_results"]["violence"]["filtered"] is True
    assert whole.choices[0].finish_reason == "content_filter" and whole.choices[0].message.content == "some words"
    client.close()  # its pooled connection, not left to the collector (ResourceWarning)


def test_the_native_done_names_the_categories_filtered(gateway: RunningServer) -> None:
    reply = httpx.post(gateway.url + STREAM, json={"message": FILTERED})
    events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == {
        "done": True,
        "finish_reason": "content_filter",
        "filtered": ["violence"],
        "usage": events[-1]["usage"],
    }
    clean = httpx.post(gateway.url + STREAM, json={"message": "echo:fine"}).text
    assert '"filtered"' not in clean


def test_usechat_gets_a_content_filter_finish_and_a_data_part_naming_the_categories(gateway: RunningServer) -> None:
    parts = chunks(httpx.post(gateway.url + UI, json=ui_body({"type": "text", "text": FILTERED})).text)
    [data] = [p for p in parts if isinstance(p, dict) and p.get("type") == "data-content-filter"]
    assert data["data"] == {"filtered": ["violence"]}
    assert parts[-2]["finishReason"] == "content-filter" and parts[-2]["messageMetadata"]["filtered"] == ["violence"]


def test_the_azure_openai_client_reads_the_filter_results_through_the_azure_shaped_route(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway(api_keys=("azure-shaped-key",))
    client = openai.AzureOpenAI(
        azure_endpoint=gateway.url, api_key="azure-shaped-key", api_version="2024-10-21", max_retries=0
    )
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": FILTERED}]
    stream = list(client.chat.completions.create(model="default", messages=messages, stream=True))  # the deployment
    prompt = [(c.model_extra or {}).get("prompt_filter_results") for c in stream]
    assert any(prompt) and stream[-1].choices[0].finish_reason == "content_filter"
    whole = client.chat.completions.create(model="default", messages=messages)
    assert whole.choices[0].model_extra is not None
    assert whole.choices[0].model_extra["content_filter_results"]["violence"]["filtered"] is True
    # Azure's error shape and key header: a wrong key is the SDK's AuthenticationError, an unknown group a 404.
    wrong = openai.AzureOpenAI(azure_endpoint=gateway.url, api_key="nope", api_version="2024-10-21", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="default", messages=messages)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-group", messages=messages)
    client.close()  # its pooled connection, not left to the collector (ResourceWarning)
    wrong.close()  # its pooled connection, not left to the collector (ResourceWarning)


def test_the_responses_face_over_a_chat_upstream_carries_azures_content_filters(gateway: RunningServer) -> None:
    # Azure's Responses API names them `content_filters` on the Response: one entry for the prompt, one for the
    # completion. The Responses face over a chat upstream writes them there, streamed and whole.
    client = azure_client(gateway)
    whole = client.responses.create(model="default", input=FILTERED)
    filters = {entry["source_type"]: entry for entry in (whole.model_extra or {})["content_filters"]}
    assert filters["prompt"]["blocked"] is False and filters["prompt"]["content_filter_results"]["violence"] == {
        "filtered": False,
        "severity": "safe",
    }
    assert filters["completion"]["blocked"] is True
    assert filters["completion"]["content_filter_results"]["violence"] == {"filtered": True, "severity": "medium"}
    assert whole.status == "incomplete" and whole.incomplete_details is not None
    assert whole.incomplete_details.reason == "content_filter" and whole.output_text == "some words"
    events = list(client.responses.create(model="default", input=FILTERED, stream=True))
    assert events[-1].type == "response.incomplete"
    final = events[-1].response
    assert [e["source_type"] for e in (final.model_extra or {})["content_filters"]] == ["prompt", "completion"]
    clean = client.responses.create(model="default", input="echo:fine")
    assert all(not entry["blocked"] for entry in (clean.model_extra or {}).get("content_filters", []))
    client.close()  # its pooled connection, not left to the collector (ResourceWarning)
