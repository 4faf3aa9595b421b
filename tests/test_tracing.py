"""Traces through a real gateway, a real OTLP/HTTP receiver and the real OpenTelemetry exporter: one SERVER span per
request and one CLIENT span per upstream attempt under the GenAI conventions, in the caller's trace and carried on
to the upstream; failover, resume links, opt-in message capture, the log line's ids, an exporter that is down, and
the standard OTEL_* settings."""

from __future__ import annotations

import json
import logging
import os
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse, connect_sse

from chatsse.guards.config import guards_from
from chatsse.settings import ConfigError, Settings
from chatsse.simulator import Simulator
from chatsse.tracing import TracingConfig
from tests.conftest import API_KEY, DEPLOYMENT, GatewayFactory
from tests.helpers import STREAM, chat, kinds, metric, text_of
from tests.otlp_receiver import Receiver, Span, otlp_receiver
from tests.redis_server import RedisServer
from tests.servers import Fleet, chatsse_serve, free_port, serve_in_thread

pytestmark = pytest.mark.anyio
CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
QUICK = {"schedule_delay_millis": 50}  # the exporter sends within 50 ms, not the default 5 s


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as running:
        yield running


def tracing_to(receiver: Receiver, **options: Any) -> TracingConfig:
    return TracingConfig(endpoint=receiver.url, batch=QUICK, **options)


def one(spans: list[Span], **match: Any) -> Span:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one span matching {match}, got {found}"
    return found[0]


async def test_a_streamed_reply_is_a_server_and_a_client_span_in_the_callers_trace(
    receiver: Receiver, make_gateway: GatewayFactory, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatsse.access")
    gateway = make_gateway(tracing=tracing_to(receiver), log_format="json")
    async with httpx.AsyncClient() as client:
        payload = {"message": "hello there", "temperature": 0.5, "max_tokens": 200}
        async with aconnect_sse(
            client, "POST", gateway.url + STREAM, json=payload, headers={"traceparent": TRACEPARENT}
        ) as source:
            assert source.response.status_code == 200
            events = [json.loads(event.data) async for event in source.aiter_sse()]
    assert kinds(events)[-1] == "done"
    usage = events[-1]["usage"]
    spans = receiver.wait_for(2, trace_id=CALLER_TRACE)
    server, attempt = one(spans, kind="SERVER"), one(spans, kind="CLIENT")

    assert server.name == "POST /api/v1/chat/stream" and server.parent_span_id == CALLER_SPAN
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/api/v1/chat/stream"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["chatsse.caller"] == "ip:127.0.0.1" and "error.type" not in server.attributes
    assert server.resource["service.name"] == "chatsse"
    # The SERVER span covers the whole stream: it ends after its attempt's span, which ends with the reply.
    assert server.start_ns <= attempt.start_ns and attempt.end_ns <= server.end_ns

    assert attempt.name == f"chat {DEPLOYMENT}" and attempt.parent_span_id == server.span_id
    attributes = attempt.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert attributes["gen_ai.request.model"] == DEPLOYMENT
    assert attributes["gen_ai.request.temperature"] == 0.5 and attributes["gen_ai.request.max_tokens"] == 200
    assert attributes["gen_ai.response.model"].startswith("gpt-4o")
    assert attributes["gen_ai.response.id"].startswith("chatcmpl-")
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attributes["server.address"] == "127.0.0.1" and attributes["server.port"] == simulator.port
    assert attributes["chatsse.upstream"] == "sim" and attributes["chatsse.attempt"] == 1
    assert attempt.events == ["gen_ai.first_token"]
    assert attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert attributes["chatsse.output_tokens_per_second"] > 0
    assert attempt.status == "UNSET" and "error.type" not in attributes

    # The upstream request carried the CLIENT span as its parent; the log line names the trace and the SERVER span.
    [upstream_request] = simulator.requests
    assert upstream_request.headers["traceparent"].startswith(f"00-{CALLER_TRACE}-{attempt.span_id}-")
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "chatsse.access"]
    assert line["trace_id"] == CALLER_TRACE and line["span_id"] == server.span_id


async def test_without_a_traceparent_each_request_starts_a_trace(
    receiver: Receiver, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway(tracing=tracing_to(receiver))
    async with httpx.AsyncClient() as client:
        for _ in range(2):
            response, events = await chat(client, gateway.url, {"message": "echo:hi"})
            assert response.status_code == 200 and text_of(events) == "hi"
    servers = receiver.wait_for(2, kind="SERVER")
    assert len({span.trace_id for span in servers}) == 2 and all(span.parent_span_id == "" for span in servers)


async def test_a_failover_is_two_sibling_attempt_spans(receiver: Receiver, fleet: Fleet) -> None:
    fleet.sim("down", always="status=500")
    fleet.sim("up")
    gateway = fleet.gateway(
        fleet.upstream("down", priority=0), fleet.upstream("up", priority=1, api="openai"), tracing=tracing_to(receiver)
    )
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"message": "echo:over"})
    assert response.status_code == 200 and text_of(events) == "over"
    attempts = sorted(receiver.wait_for(2, kind="CLIENT"), key=lambda span: span.attributes["chatsse.attempt"])
    server = one(receiver.wait_for(1, kind="SERVER"), kind="SERVER")
    failed, served = attempts
    assert {failed.parent_span_id, served.parent_span_id} == {server.span_id}
    assert failed.trace_id == served.trace_id == server.trace_id
    assert failed.attributes["chatsse.upstream"] == "down" and failed.attributes["chatsse.attempt"] == 1
    assert failed.attributes["error.type"] == "upstream_unavailable" and failed.status == "ERROR"
    assert failed.attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert served.attributes["chatsse.upstream"] == "up" and served.attributes["chatsse.attempt"] == 2
    assert served.attributes["gen_ai.provider.name"] == "openai" and served.status == "UNSET"
    assert served.attributes["gen_ai.request.model"] == "dep-up" and served.name == "chat dep-up"
    assert "error.type" not in served.attributes
    # Each upstream saw its own attempt's span as the parent.
    assert fleet.sims["down"].requests[0].headers["traceparent"].split("-")[2] == failed.span_id
    assert fleet.sims["up"].requests[0].headers["traceparent"].split("-")[2] == served.span_id


async def test_errors_mark_the_spans(receiver: Receiver, make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(tracing=tracing_to(receiver))
    async with httpx.AsyncClient() as client:
        refused = await client.post(gateway.url + STREAM, json={"message": ""})
        response, events = await chat(client, gateway.url, {"message": "echo:a b c d[sim: error_after=2]"})
    assert refused.status_code == 422 and response.status_code == 200 and kinds(events)[-1] == "error"
    code = events[-1]["error"]["code"]
    servers = receiver.wait_for(2, kind="SERVER")
    bad = next(span for span in servers if span.attributes["http.response.status_code"] == 422)
    cut = next(span for span in servers if span.attributes["http.response.status_code"] == 200)
    assert bad.attributes["error.type"] == refused.json()["error"]["code"] and bad.status == "UNSET"  # the client's
    assert cut.attributes["error.type"] == code and cut.status == "ERROR"  # the stream failed after its 200
    attempt = one(receiver.wait_for(1, kind="CLIENT"), kind="CLIENT")
    assert attempt.trace_id == cut.trace_id  # the refused request never reached an upstream
    assert attempt.attributes["error.type"] == code and attempt.status == "ERROR"


async def test_no_message_text_is_exported_unless_asked(
    receiver: Receiver, make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    prompt, reply = "echo:zebra quartz", "zebra quartz"
    gateway = make_gateway(tracing=tracing_to(receiver), system_prompt="be terse, mongoose")
    async with httpx.AsyncClient() as client:
        _, events = await chat(client, gateway.url, {"message": prompt})
    assert text_of(events) == reply
    spans = receiver.wait_for(2)
    assert len(spans) == 2
    exported = json.dumps([span.attributes for span in spans] + [span.events for span in spans])
    assert "zebra" not in exported and "mongoose" not in exported

    captured = make_gateway(tracing=tracing_to(receiver, capture_content=True))
    async with httpx.AsyncClient() as client:
        _, events = await chat(client, captured.url, {"message": prompt})
    attempt = receiver.wait_for(2, kind="CLIENT")[-1]
    assert json.loads(attempt.attributes["gen_ai.input.messages"])[-1] == {"role": "user", "content": prompt}
    [output] = json.loads(attempt.attributes["gen_ai.output.messages"])
    assert output["role"] == "assistant" and output["parts"] == [{"type": "text", "content": reply}]
    assert output["finish_reason"] == "stop"


async def test_the_attribute_value_length_limit_cuts_long_strings(
    receiver: Receiver, make_gateway: GatewayFactory
) -> None:
    prompt = "echo:" + "lorem ipsum " * 40
    limited = make_gateway(tracing=tracing_to(receiver, capture_content=True, value_length_limit=64))
    async with httpx.AsyncClient() as client:
        _, events = await chat(client, limited.url, {"message": prompt})
    assert text_of(events) == prompt.removeprefix("echo:")  # the reply is whole; only its span's copy is cut
    attempt = receiver.wait_for(1, kind="CLIENT")[-1]
    assert len(attempt.attributes["gen_ai.input.messages"]) == 64
    assert attempt.attributes["gen_ai.input.messages"].startswith('[{"role":"user","content":"echo:lorem ipsum')
    assert len(attempt.attributes["gen_ai.output.messages"]) == 64
    assert attempt.attributes["gen_ai.request.model"] == DEPLOYMENT  # short strings are left alone


async def test_with_the_exporter_down_streams_are_unaffected(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    nowhere = TracingConfig(endpoint=f"http://127.0.0.1:{free_port()}/v1/traces", batch=QUICK)
    gateway = make_gateway(tracing=nowhere)
    async with httpx.AsyncClient() as client:
        for n in range(5):
            response, events = await chat(client, gateway.url, {"message": f"echo:still {n}"})
            assert response.status_code == 200 and text_of(events) == f"still {n}" and kinds(events)[-1] == "done"
        assert (await client.get(gateway.url + "/health")).status_code == 200
    assert len(simulator.requests) == 5


async def test_an_unsampled_caller_trace_is_carried_but_not_exported(
    receiver: Receiver, make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway(tracing=tracing_to(receiver))
    async with httpx.AsyncClient() as client:
        headers = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"}  # the caller sampled this trace out
        async with aconnect_sse(client, "POST", gateway.url + STREAM, json={"message": "hi"}, headers=headers) as sse:
            assert [json.loads(e.data) async for e in sse.aiter_sse()][-1]["done"] is True
        await chat(client, gateway.url, {"message": "echo:sampled"})  # a sampled one, to know the exporter ran
    assert receiver.wait_for(2)
    assert not [span for span in receiver.spans if span.trace_id == CALLER_TRACE]
    assert simulator.requests[0].headers["traceparent"].startswith(f"00-{CALLER_TRACE}-")
    assert simulator.requests[0].headers["traceparent"].endswith("-00")


async def test_the_genai_histograms_are_in_the_metrics(gateway: Any) -> None:
    async with httpx.AsyncClient() as client:
        _, events = await chat(client, gateway.url, {"message": "hello"})
        text = (await client.get(gateway.url + "/metrics")).text
    usage = events[-1]["usage"]
    labels = f'gen_ai_operation_name="chat",gen_ai_provider_name="azure.ai.openai",gen_ai_request_model="{DEPLOYMENT}"'
    assert (
        metric(text, f'gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type="input"}}') == usage["prompt_tokens"]
    )
    assert (
        metric(text, f'gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type="output"}}')
        == usage["completion_tokens"]
    )
    assert metric(text, f'gen_ai_client_operation_duration_seconds_count{{error_type="",{labels}}}') == 1
    assert metric(text, f"gen_ai_server_time_to_first_token_seconds_count{{{labels}}}") == 1
    assert metric(text, f"gen_ai_server_time_to_first_token_seconds_sum{{{labels}}}") > 0


def test_the_standard_settings_turn_tracing_on() -> None:
    base = {"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9", "AZURE_OPENAI_API_KEY": "k"}
    base["AZURE_OPENAI_DEPLOYMENT_NAME"] = "d"
    assert Settings.from_env(base, env_file=None).tracing is None
    on = Settings.from_env(
        {
            **base,
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=se%20cret,x-team=a",
            "OTEL_SERVICE_NAME": "gateway-eu",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_BSP_SCHEDULE_DELAY": "1000",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
            "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "4096",
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100",  # the span-specific limit wins
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "4000",  # the traces-only setting wins
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": __file__,
        },
        env_file=None,
    ).tracing
    assert on == TracingConfig(
        endpoint="http://collector:4318/v1/traces",  # the general endpoint is a base, as the specification says
        headers={"api-key": "se cret", "x-team": "a"},
        service_name="gateway-eu",
        resource={"deployment.environment": "prod"},
        sampler="parentbased_traceidratio",
        sampler_arg=0.25,
        batch={"schedule_delay_millis": 1000},
        capture_content=True,
        value_length_limit=4096,
        timeout=4.0,
        compression="gzip",
        certificate=__file__,
    )
    assert "se cret" not in repr(on)  # a collector's key never reaches a log
    traces = {**base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/custom"}
    assert Settings.from_env(traces, env_file=None).tracing.endpoint == "http://collector:4318/custom"  # type: ignore[union-attr]
    disabled = {**traces, "OTEL_SDK_DISABLED": "true"}
    assert Settings.from_env(disabled, env_file=None).tracing is None


def test_an_unusable_tracing_setting_is_refused_with_the_others() -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9",
        "AZURE_OPENAI_API_KEY": "k",
        "AZURE_OPENAI_DEPLOYMENT_NAME": "d",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_TRACES_SAMPLER": "sometimes",
        "OTEL_TRACES_SAMPLER_ARG": "2",
        "OTEL_BSP_MAX_QUEUE_SIZE": "lots",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "0",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "soon",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "brotli",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": "/no/such/ca.pem",
        "CHATSSE_MAX_STREAMS": "-1",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env, env_file=None)
    message = str(caught.value)
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_TRACES_SAMPLER=",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "CHATSSE_MAX_STREAMS",
    ):
        assert name in message


def test_chatsse_serve_refuses_an_unusable_endpoint(simulator: Simulator, tmp_path: Path) -> None:
    import subprocess

    from tests.servers import CHATSSE, clean_env

    env = clean_env(
        AZURE_OPENAI_ENDPOINT=simulator.url,
        AZURE_OPENAI_API_KEY=API_KEY,
        AZURE_OPENAI_DEPLOYMENT_NAME=DEPLOYMENT,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="ftp://collector",
    )
    done = subprocess.run([CHATSSE, "serve", "--port", "0"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT='ftp://collector' is not valid" in done.stderr


def test_a_resumed_reply_on_another_instance_links_to_the_request_that_started_it(
    receiver: Receiver, simulator: Simulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {
        "CHATSSE_REDIS_URL": redis_server.url,
        "CHATSSE_RESUME_SECONDS": "30",
        "CHATSSE_PING_SECONDS": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base,  # the standard settings, through `chatsse serve`
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "chatsse-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    words = " ".join(f"w{i}" for i in range(8))
    with ExitStack() as stack, httpx.Client(timeout=30) as client:
        first = stack.enter_context(chatsse_serve(tmp_path, simulator.url, env=env)).url
        second = stack.enter_context(chatsse_serve(tmp_path, simulator.url, env=env)).url
        message = {"message": f"echo:{words}[sim: hold_after=3 hold=linked]"}
        with connect_sse(client, "POST", first + STREAM, json=message, headers={"traceparent": TRACEPARENT}) as sse:
            stream_id = sse.response.headers["x-chatsse-stream"]
            before = [event for event, _ in zip(sse.iter_sse(), range(2), strict=False)]
        with connect_sse(
            client, "GET", f"{second}{STREAM}/{stream_id}", headers={"last-event-id": before[-1].id}
        ) as source:
            assert source.response.status_code == 200
            events = source.iter_sse()
            after = [next(events)]
            simulator.release("linked")
            after += list(events)
    payloads = [json.loads(e.data) for e in before + after if e.data]
    assert text_of(payloads) == words and kinds(payloads)[-1] == "done"
    servers = receiver.wait_for(2, kind="SERVER")
    started = one(servers, name="POST /api/v1/chat/stream")
    follower = one(servers, name="GET /api/v1/chat/stream/{stream_id}")
    assert started.trace_id == CALLER_TRACE and follower.trace_id != CALLER_TRACE  # a request of its own
    assert follower.links == [(started.trace_id, started.span_id)]
    assert follower.attributes["http.route"] == "/api/v1/chat/stream/{stream_id}"
    assert started.resource["service.name"] == "chatsse-test"
    assert started.resource["deployment.environment"] == "test"
    assert one(receiver.wait_for(1, kind="CLIENT"), kind="CLIENT").parent_span_id == started.span_id


def test_a_resumed_reply_on_the_same_instance_links_too(
    settings: Settings, simulator: Simulator, receiver: Receiver
) -> None:
    import dataclasses

    from chatsse.app import create_app

    app = create_app(dataclasses.replace(settings, resume_seconds=30, tracing=tracing_to(receiver)))
    words = " ".join(f"v{i}" for i in range(6))
    with serve_in_thread(app) as gateway, httpx.Client(timeout=30) as client:
        message = {"message": f"echo:{words}[sim: hold_after=2 hold=here]"}
        with connect_sse(client, "POST", gateway.url + STREAM, json=message) as sse:
            stream_id = sse.response.headers["x-chatsse-stream"]
            first = next(sse.iter_sse())
        simulator.release("here")
        with connect_sse(
            client, "GET", f"{gateway.url}{STREAM}/{stream_id}", headers={"last-event-id": first.id}
        ) as source:
            rest = [json.loads(e.data) for e in source.iter_sse() if e.data]
    assert kinds(rest)[-1] == "done"
    servers = receiver.wait_for(2, kind="SERVER")
    started = one(servers, name="POST /api/v1/chat/stream")
    follower = one(servers, name="GET /api/v1/chat/stream/{stream_id}")
    assert follower.links == [(started.trace_id, started.span_id)]


def test_no_span_leaks_a_key(receiver: Receiver, make_gateway: GatewayFactory) -> None:
    caller_key = "sk-caller-SECRET-e4b1"
    gateway = make_gateway(tracing=tracing_to(receiver), api_keys=(caller_key,))
    with httpx.Client() as client:
        keyed = {"authorization": f"Bearer {caller_key}"}
        ok = client.post(gateway.url + STREAM, json={"message": "hi"}, headers=keyed)
        refused = client.post(gateway.url + STREAM, json={"message": "hi"}, headers={"authorization": "Bearer wrong"})
    assert ok.status_code == 200 and refused.status_code == 401
    spans = receiver.wait_for(3)
    exported = json.dumps([(s.attributes, s.resource, s.name) for s in spans])
    assert caller_key not in exported and API_KEY not in exported and "wrong" not in exported
    assert os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") is None  # nothing leaked into the process either


def test_azure_monitor_is_chosen_by_its_connection_string() -> None:
    import importlib.util

    base = {"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9", "AZURE_OPENAI_API_KEY": "k"}
    base["AZURE_OPENAI_DEPLOYMENT_NAME"] = "d"
    secret = (
        "InstrumentationKey=00000000-0000-0000-0000-00000000beef;IngestionEndpoint=https://x.in.applicationinsights"
    )
    installed = importlib.util.find_spec("azure.monitor") is not None
    try:
        tracing = Settings.from_env({**base, "APPLICATIONINSIGHTS_CONNECTION_STRING": secret}, env_file=None).tracing
        assert installed and tracing is not None and tracing.azure_monitor == secret and secret not in repr(tracing)
    except ConfigError as refused:  # the extra is not installed here: start-up says how to get it
        assert not installed and "pip install 'chatsse[azure-monitor]'" in str(refused) and secret not in str(refused)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**base, "APPLICATIONINSIGHTS_CONNECTION_STRING": "nonsense-key"}, env_file=None)
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING is not valid" in str(caught.value)
    assert "nonsense-key" not in str(caught.value)


async def test_a_responses_api_reply_over_a_responses_upstream_is_traced(
    receiver: Receiver, make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway(tracing=tracing_to(receiver), api="azure-v1", protocol="responses")
    body = {"model": "default", "input": "echo:traced reply"}
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.url + "/v1/responses", json=body, headers={"traceparent": TRACEPARENT})
    made = response.json()
    assert response.status_code == 200 and made["status"] == "completed"
    spans = receiver.wait_for(2, trace_id=CALLER_TRACE)
    server, attempt = one(spans, kind="SERVER"), one(spans, kind="CLIENT")
    assert server.attributes["http.route"] == "/v1/responses" and attempt.parent_span_id == server.span_id
    attributes = attempt.attributes
    assert attributes["gen_ai.response.id"] == made["id"] and attributes["gen_ai.response.model"] == made["model"]
    assert attributes["gen_ai.usage.input_tokens"] == made["usage"]["input_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == made["usage"]["output_tokens"]
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"] and attempt.events == ["gen_ai.first_token"]
    assert simulator.requests[-1].headers["traceparent"].startswith(f"00-{CALLER_TRACE}-{attempt.span_id}-")


async def test_the_server_span_names_the_guards_that_acted_never_their_text(
    receiver: Receiver, make_gateway: GatewayFactory, simulator: Simulator, tmp_path: Path
) -> None:
    text = 'guards = ["pii"]\n\n[[guard]]\nname = "pii"\nkind = "pii"\n'
    problems: list[str] = []
    tables = guards_from(tomllib.loads(text), str(tmp_path / "chatsse.toml"), problems)
    assert not problems
    gateway = make_gateway(tracing=tracing_to(receiver), guards=tables)
    card = "4111 1111 1111 1111"
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            gateway.url + STREAM, json={"message": f"echo:pay {card}"}, headers={"traceparent": TRACEPARENT}
        )
    assert "[CARD]" in reply.text and "4111 1111" not in reply.text  # not ids' hex
    server = one(receiver.wait_for(2, trace_id=CALLER_TRACE), kind="SERVER")
    assert server.attributes["chatsse.guards"] == ["pii:redact:input"]
    assert card not in json.dumps(server.attributes)
