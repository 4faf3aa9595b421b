"""Callers you can govern, through a real gateway and the simulator: models, tokens and requests per minute, quotas,
open replies, the max_tokens cap, usage, OpenAI's rate-limit headers, and the errors each face answers."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from httpx_sse import aconnect_sse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatsse.callers import CallerConfig, CallerTables
from chatsse.callers.keys import key_sha256
from chatsse.settings import ConfigError, Settings
from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM, chat, metric, text_of
from tests.redis_server import RedisServer
from tests.servers import API_KEY, CHATSSE, DEPLOYMENT, chatsse_serve, clean_env, wait_until

pytestmark = pytest.mark.anyio

KEY, OTHER = "partner-key-4d1f", "mobile-key-9a2c"


def callers(*configs: CallerConfig, anonymous: CallerConfig | None = None) -> CallerTables:
    return CallerTables(configs, anonymous, quotas_in_memory=True)


def caller(name: str = "partner", key: str = KEY, **limits: object) -> CallerConfig:
    return CallerConfig(name=name, key_sha256=key_sha256(key), **limits)  # type: ignore[arg-type]


def auth(key: str = KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_caller_may_use_only_its_models(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(callers=callers(caller(models=()), caller("mobile", OTHER)))
    async with httpx.AsyncClient(headers=auth()) as client:
        response, _ = await chat(client, gateway.url, {"message": "hi"})
        assert response.status_code == 403 and response.json()["error"]["code"] == "model_not_allowed"
        assert (await client.get(gateway.url + "/api/v1/models")).json() == {"models": []}
        assert (await client.get(gateway.url + "/v1/models")).json()["data"] == []
        other = await client.get(gateway.url + "/api/v1/models", headers=auth(OTHER))
        assert other.json() == {"models": ["default"]}
    assert simulator.requests == []


async def test_tokens_per_minute_refuse_once_spent_with_openai_headers(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway(callers=callers(caller(tokens_per_minute=10)))
    async with httpx.AsyncClient(headers=auth()) as client:
        first, events = await chat(client, gateway.url, {"message": "echo:a b c d e f g h"})  # 8 + 8 tokens
        assert text_of(events) == "a b c d e f g h"
        assert first.headers["x-ratelimit-limit-tokens"] == "10"
        assert first.headers["x-ratelimit-remaining-tokens"] == "10"  # before this reply was charged
        refused, _ = await chat(client, gateway.url, {"message": "echo:again"})
        usage = (await client.get(gateway.url + "/api/v1/usage")).json()
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 30  # 6 tokens in debt at 10 a minute
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.headers["x-ratelimit-reset-tokens"].endswith("s")
    assert len(simulator.requests) == 1  # the refusal never reached the upstream
    assert usage["tokens_per_minute"]["remaining"] == 0 and usage["tokens_per_minute"]["limit"] == 10
    assert usage["quota"] is None and usage["requests_per_minute"] is None


async def test_the_quota_refuses_with_403_until_the_period_resets(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway(callers=callers(caller(token_quota=20, quota_period="day")))
    async with httpx.AsyncClient(headers=auth()) as client:
        for _ in range(2):
            response, _ = await chat(client, gateway.url, {"message": "echo:one two three four five"})  # 10
            assert response.status_code == 200
        usage = (await client.get(gateway.url + "/api/v1/usage")).json()
        refused, _ = await chat(client, gateway.url, {"message": "echo:more"})
    assert usage["quota"]["used"] == 20 and usage["quota"]["remaining"] == 0 and usage["quota"]["period"] == "day"
    assert usage["quota"]["resets_at"].endswith("T00:00:00Z")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "quota_exceeded"
    assert 0 < int(refused.headers["retry-after"]) <= 86400
    assert len(simulator.requests) == 2


async def while_one_is_held(
    client: httpx.AsyncClient, url: str, simulator: Simulator, other: dict[str, str]
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """Send `other` while a reply of the same caller is held open; then the held reply's remaining events."""
    held = {"message": "echo:a b[sim: hold_after=1 hold=held]"}
    async with aconnect_sse(client, "POST", url + STREAM, json=held) as source:
        events = source.aiter_sse()
        await anext(events)
        response, _ = await chat(client, url, other)
        simulator.release("held")
        return response, [json.loads(e.data) async for e in events]


async def test_requests_per_minute_and_open_replies(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(callers=callers(caller(requests_per_minute=3, max_streams=1)))
    async with httpx.AsyncClient(headers=auth()) as client:
        busy, rest = await while_one_is_held(client, gateway.url, simulator, {"message": "echo:second"})
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "too_many_streams"
        assert rest[-1]["done"] is True
        second, _ = await chat(client, gateway.url, {"message": "echo:now"})  # the first reply's slot is free again
        assert second.status_code == 200, second.text
        assert second.headers["x-ratelimit-remaining-requests"] == "1"
        third, _ = await chat(client, gateway.url, {"message": "echo:over"})
        fourth, _ = await chat(client, gateway.url, {"message": "echo:over"})
    assert third.status_code == 200
    assert fourth.status_code == 429 and fourth.json()["error"]["code"] == "too_many_requests"
    assert fourth.headers["x-ratelimit-limit-requests"] == "3"


async def test_a_refusal_after_admission_frees_the_callers_slot(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway(callers=callers(caller(max_streams=5)), max_streams=1)  # the gateway's cap: one open
    async with httpx.AsyncClient(headers=auth()) as client:
        full, _ = await while_one_is_held(client, gateway.url, simulator, {"message": "echo:x"})
        usage = (await client.get(gateway.url + "/api/v1/usage")).json()
    assert full.status_code == 503 and full.json()["error"]["code"] == "too_many_streams"
    assert usage["streams"] == {"open": 0, "limit": 5}


async def test_max_tokens_is_capped_for_the_caller(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(callers=callers(caller(max_tokens=5)))
    async with httpx.AsyncClient(headers=auth()) as client:
        await chat(client, gateway.url, {"message": "echo:hi", "max_tokens": 500})
        await chat(client, gateway.url, {"message": "echo:hi", "max_tokens": 3})
        await chat(client, gateway.url, {"message": "echo:hi"})
    assert [r.json["max_completion_tokens"] for r in simulator.requests] == [5, 3, 5]


async def test_tokens_are_counted_in_metrics_and_the_log_line_and_estimated_without_usage(
    make_gateway: GatewayFactory, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatsse.access")
    gateway = make_gateway(callers=callers(caller()), log_format="json")
    old = make_gateway(callers=callers(caller()), api_version="2024-06-01", log_format="json")  # no usage sent
    async with httpx.AsyncClient(headers=auth()) as client:
        await chat(client, gateway.url, {"message": "echo:a b c"})  # 3 words in, 3 tokens out
        await chat(client, old.url, {"message": "echo:abcdefgh"})  # estimated: 4 + 13/4 in, 8/4 out
        metrics = (await client.get(gateway.url + "/metrics")).text
        old_metrics = (await client.get(old.url + "/metrics")).text
    assert metric(metrics, 'chatsse_tokens_total{caller="partner",model="default",type="prompt"}') == 3
    assert metric(metrics, 'chatsse_tokens_total{caller="partner",model="default",type="completion"}') == 3
    assert metric(old_metrics, 'chatsse_tokens_total{caller="partner",model="default",type="estimated"}') == 4 + 4 + 2

    def chats() -> list[dict[str, object]]:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "chatsse.access"]
        return [line for line in lines if line["route"] == STREAM]

    assert wait_until(lambda: len(chats()) == 2)
    first, second = chats()
    assert first["caller"] == "partner" and first["prompt_tokens"] == 3 and first["tokens_estimated"] is False
    assert second["completion_tokens"] == 2 and second["tokens_estimated"] is True


async def test_refusals_are_counted_by_caller_and_reason(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(callers=callers(caller(models=())))
    async with httpx.AsyncClient(headers=auth()) as client:
        await chat(client, gateway.url, {"message": "hi"})
        metrics = (await client.get(gateway.url + "/metrics")).text
    assert metric(metrics, 'chatsse_refusals_total{caller="partner",reason="model_not_allowed"}') == 1


async def test_anonymous_limits_count_per_client_address_beside_keyed_callers(make_gateway: GatewayFactory) -> None:
    anonymous = CallerConfig(name="anonymous", requests_per_minute=1)
    gateway = make_gateway(callers=callers(caller(), anonymous=anonymous))
    async with httpx.AsyncClient() as client:
        first, _ = await chat(client, gateway.url, {"message": "echo:hi"})
        second, _ = await chat(client, gateway.url, {"message": "echo:hi"})
        partner = await client.post(gateway.url + STREAM, json={"message": "echo:hi"}, headers=auth())
        wrong = await client.post(gateway.url + STREAM, json={"message": "echo:hi"}, headers=auth("nope"))
        metrics = await client.get(gateway.url + "/metrics")
    assert first.status_code == 200 and second.status_code == 429
    assert second.json()["error"]["code"] == "too_many_requests"
    assert partner.status_code == 200  # a key is its own caller, with its own limits
    assert wrong.status_code == 401  # a wrong key is never anonymous
    assert metrics.status_code == 401  # /metrics stays behind the keys


def test_the_openai_sdk_reads_refusals_as_its_own_errors(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(
        callers=callers(caller(tokens_per_minute=5), caller("quota", OTHER, token_quota=5, quota_period="hour"))
    )
    for key, expected in ((KEY, openai.RateLimitError), (OTHER, openai.PermissionDeniedError)):
        # Closed at the end: an SDK client left to the collector drops its pooled socket as a ResourceWarning in
        # whichever later test happens to collect it.
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as client:
            client.chat.completions.create(model="default", messages=[{"role": "user", "content": "echo:a b c"}])
            with pytest.raises(expected) as caught:
                client.chat.completions.create(model="default", messages=[{"role": "user", "content": "echo:x"}])
        assert caught.value.code == ("rate_limited" if key == KEY else "quota_exceeded")


def test_every_face_charges_its_replies(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(callers=callers(caller(tokens_per_minute=1000)))
    ui_body = {"id": "c", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "echo:a b c"}]}]}
    openai_body = {"model": "default", "stream": True, "messages": [{"role": "user", "content": "echo:a b c d"}]}
    with httpx.Client(headers=auth()) as client:
        assert "finish" in client.post(gateway.url + "/api/v1/chat/ui", json=ui_body).text  # 3 + 3 tokens
        assert "[DONE]" in client.post(gateway.url + "/v1/chat/completions", json=openai_body).text  # 4 + 4
        native = client.post(gateway.url + STREAM, json={"message": "echo:a"})  # 1 + 1
        assert wait_until(
            lambda: client.get(gateway.url + "/api/v1/usage").json()["tokens_per_minute"]["remaining"] <= 985
        )
        remaining = client.get(gateway.url + "/api/v1/usage").json()["tokens_per_minute"]["remaining"]
    assert native.status_code == 200 and 980 <= remaining <= 985  # 1000 - 16, and a little refill since


def test_callers_in_the_config_file_and_what_start_up_refuses(tmp_path: Path) -> None:
    upstream = (
        '[[upstream]]\nname = "u"\nendpoint = "https://x.openai.azure.com"\ndeployment = "d"\napi_key_env = "K"\n'
    )
    good = tmp_path / "good.toml"
    good.write_text(
        upstream + f'[[caller]]\nname = "mobile"\nkey_sha256 = "{key_sha256(KEY)}"\nmodels = ["default"]\n'
        'tokens_per_minute = 100\ntoken_quota = 1000\nquota_period = "month"\nmax_streams = 2\n\n'
        '[[caller]]\nname = "web"\nkey_env = "WEB_KEY"\n\n[anonymous]\nrequests_per_minute = 10\n'
    )
    env = {"K": "k", "WEB_KEY": OTHER, "CHATSSE_REDIS_URL": "redis://127.0.0.1:9/0"}
    settings = Settings.from_env({"CHATSSE_CONFIG": str(good), **env}, env_file=None)
    mobile, web = settings.callers.callers
    assert (mobile.name, mobile.token_quota, mobile.quota_period, mobile.models) == (
        "mobile",
        1000,
        "month",
        ("default",),
    )
    assert web.key_sha256 == key_sha256(OTHER) and settings.callers.anonymous is not None
    assert KEY not in repr(settings) and OTHER not in repr(settings)
    bad = {
        "same_name": ('[[caller]]\nname = "a"\nkey_env = "A"\n[[caller]]\nname = "a"\nkey_env = "B"\n', "used already"),
        "same_key": (
            '[[caller]]\nname = "a"\nkey_env = "A"\n[[caller]]\nname = "b"\nkey_env = "A"\n',
            "another caller",
        ),
        "wrong_type": ('[[caller]]\nname = "a"\nkey_env = "A"\nmax_streams = "4"\n', "max_streams = '4' is not valid"),
        "no_period": ('[[caller]]\nname = "a"\nkey_env = "A"\ntoken_quota = 5\n', "token_quota needs quota_period"),
        "no_key": ('[[caller]]\nname = "a"\n', "needs key_sha256 or key_env"),
        "unknown_model": ('[[caller]]\nname = "a"\nkey_env = "A"\nmodels = ["big"]\n', "which no upstream serves"),
    }
    for name, (tables, says) in bad.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(upstream + tables)
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"CHATSSE_CONFIG": str(path), "K": "k", "A": "a", "B": "b"}, env_file=None)
        assert says in str(caught.value) and "[[caller]] #" in str(caught.value) and str(path) in str(caught.value)
    quota = tmp_path / "quota.toml"
    quota.write_text(upstream + '[[caller]]\nname = "a"\nkey_env = "A"\ntoken_quota = 5\nquota_period = "day"\n')
    result = subprocess.run(
        [CHATSSE, "serve"],
        cwd=tmp_path,
        env=clean_env(CHATSSE_CONFIG=str(quota), K="k", A="a"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "CHATSSE_REDIS_URL" in result.stderr and "quotas_in_memory" in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_new_prints_a_key_once_and_the_table_with_its_hash(tmp_path: Path) -> None:
    result = subprocess.run([CHATSSE, "keys", "new", "mobile"], capture_output=True, text=True, timeout=30, check=True)
    key = result.stdout.splitlines()[0]
    assert len(key) > 30 and f'key_sha256 = "{key_sha256(key)}"' in result.stdout and 'name = "mobile"' in result.stdout
    again = subprocess.run([CHATSSE, "keys", "new", "mobile"], capture_output=True, text=True, timeout=30, check=True)
    assert again.stdout.splitlines()[0] != key


# --- shared by every process, on a real Redis ---------------------------------------------------------------


def config_file(tmp_path: Path, simulator: Simulator, callers_toml: str) -> Path:
    path = tmp_path / "chatsse.toml"
    path.write_text(
        f'[[upstream]]\nname = "sim"\nendpoint = "{simulator.url}"\ndeployment = "{DEPLOYMENT}"\n'
        f'api_key_env = "SIM_KEY"\n\n{callers_toml}'
    )
    return path


@contextmanager
def two_gateways(
    tmp_path: Path, simulator: Simulator, redis_server: RedisServer, callers_toml: str
) -> Iterator[tuple[str, str]]:
    env = {
        "CHATSSE_CONFIG": str(config_file(tmp_path, simulator, callers_toml)),
        "SIM_KEY": API_KEY,
        "CHATSSE_REDIS_URL": redis_server.url,
        "CHATSSE_PING_SECONDS": "0",
        "A_KEY": "key-of-a",
        "B_KEY": "key-of-b",
    }
    with ExitStack() as stack:
        first = stack.enter_context(chatsse_serve(tmp_path, None, env=env))
        second = stack.enter_context(chatsse_serve(tmp_path, None, env=env))
        yield first.url, second.url


def post(url: str, key: str, words: int) -> int:
    text = " ".join(f"w{i}" for i in range(words))  # `words` prompt tokens and `words` completion tokens
    return httpx.post(url + STREAM, json={"message": f"echo:{text}"}, headers=auth(key), timeout=30).status_code


def test_a_quota_and_tokens_per_minute_hold_across_processes(
    tmp_path: Path, simulator: Simulator, redis_server: RedisServer
) -> None:
    tables = (
        '[[caller]]\nname = "a"\nkey_env = "A_KEY"\ntoken_quota = 30\nquota_period = "day"\n\n'
        '[[caller]]\nname = "b"\nkey_env = "B_KEY"\ntokens_per_minute = 10\n'
    )
    with two_gateways(tmp_path, simulator, redis_server, tables) as (first, second):
        assert [post(url, "key-of-a", 5) for url in (first, second, first, second)] == [200, 200, 200, 403]
        assert [post(url, "key-of-b", 6) for url in (second, first)] == [200, 429]  # 12 of 10 a minute spent
        usage = httpx.get(first + "/api/v1/usage", headers=auth("key-of-a")).json()
        assert usage["quota"]["used"] == 30 and usage["quota"]["remaining"] == 0
        with redis.Redis(port=redis_server.port, decode_responses=True) as store:
            keys = {str(key) for key in store.keys("chatsse:{c:a}*")}
            assert keys and all(key.startswith("chatsse:{c:a}:") for key in keys)  # one hash slot per caller
            quota_key = next(key for key in keys if ":q:" in key)
            assert 0 < store.ttl(quota_key) <= 86400  # gone when the day ends
        redis_server.kill()  # lost: the limits let requests through, and count the failures
        assert post(first, "key-of-a", 1) == 200
        metrics = httpx.get(first + "/metrics", headers=auth("key-of-a")).text
        assert metric(metrics, "chatsse_redis_failures_total") >= 1


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["key-of-a", "key-of-b"]), st.integers(0, 1), st.integers(1, 8)), max_size=14
    )
)
def test_no_interleaving_lets_a_caller_pass_its_quota_by_more_than_one_reply(
    shared_pair: tuple[str, str, redis.Redis], steps: list[tuple[str, int, int]]
) -> None:
    urls, client = shared_pair[:2], shared_pair[2]
    client.flushdb()
    quotas = {"key-of-a": 25, "key-of-b": 40}
    charged = {key: 0 for key in quotas}
    refused_while_under = []

    def run(key: str) -> None:  # each caller's requests one after another, the two callers at once
        for who, process, words in steps:
            if who != key:
                continue
            status = post(urls[process], key, words)
            if status == 200:
                charged[key] += 2 * words
            elif charged[key] < quotas[key]:
                refused_while_under.append((key, status, charged[key]))

    threads = [threading.Thread(target=run, args=(key,)) for key in quotas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert refused_while_under == []
    for key, quota in quotas.items():
        assert charged[key] <= quota + 2 * 8, (key, charged[key])  # the quota and at most one reply over


@pytest.fixture(scope="module")
def shared_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, redis.Redis]]:
    tmp_path = tmp_path_factory.mktemp("shared-pair")
    simulator = Simulator()
    simulator.start_in_thread()
    server = RedisServer(tmp_path)
    server.start()
    tables = (
        '[[caller]]\nname = "a"\nkey_env = "A_KEY"\ntoken_quota = 25\nquota_period = "hour"\n\n'
        '[[caller]]\nname = "b"\nkey_env = "B_KEY"\ntoken_quota = 40\nquota_period = "week"\n'
    )
    try:
        with (
            two_gateways(tmp_path, simulator, server, tables) as (first, second),
            redis.Redis(port=server.port) as client,
        ):
            yield first, second, client  # closed with the module, not left to the collector
    finally:
        server.kill()
        simulator.stop_thread()
