"""Prices and what a reply costs (#32, its first part): `[[price]]` rows checked up front, a reply's cost in whole
micro-units from its usage (cached prompt tokens at their price, reasoning tokens as completion), on the log line,
in the metrics and on the trace."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatsse.prices import Price, Prices, prices_from
from chatsse.settings import ConfigError, Settings
from chatsse.simulator import Simulator
from chatsse.tracing import TracingConfig
from tests.conftest import GatewayFactory
from tests.helpers import STREAM
from tests.otlp_receiver import otlp_receiver

AUTH = {"authorization": "Bearer priced-caller-key"}
ROWS = (
    '[[price]]\nmodel = "gpt-4o"\ninput = 2.5\ncached_input = 1.25\noutput = 10.0\n\n'
    '[[price]]\nmodel = "gpt-4o-mini"\ninput = 0.15\ncached_input = 0.075\noutput = 0.6\n\n'
    '[[price]]\nmodel = "gpt-5-codex"\ninput = 1.25\ncached_input = 0.125\noutput = 10\n'
)


def parsed(text: str) -> tuple[Prices, list[str]]:
    import tomllib

    problems: list[str] = []
    return prices_from(tomllib.loads(text), "chatsse.toml", problems), problems


def test_a_replys_cost_in_micro_units_by_hand() -> None:
    prices, problems = parsed(ROWS)
    assert not problems
    mini = prices.find("gpt-4o-mini-2024-07-18")  # the date suffix Azure's `model` carries is ignored
    assert mini == Price("gpt-4o-mini", input=150_000, cached_input=75_000, output=600_000)
    # 1,000 prompt tokens of which 400 cached, 300 completion tokens of which 100 reasoning (billed as output):
    # 600 x 0.15 + 400 x 0.075 + 300 x 0.60 micro-units = 90 + 30 + 180 = 300.
    assert mini.cost(prompt=1000, cached=400, completion=300) == 300
    assert mini.cost(prompt=3, cached=0, completion=0) == 0  # 0.45 rounds down
    assert mini.cost(prompt=10, cached=0, completion=0) == 2  # 1.5 rounds half up, once per reply
    assert mini.cost(prompt=10, cached=50, completion=0) == 1  # no more cached than prompt: 10 x 0.075 = 0.75
    assert prices.find("gpt-4o", named="gpt-4o-mini") is mini  # an upstream's own row wins
    assert prices.find("llama-3") is None and prices.find(None) is None


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)), max_size=50))
def test_costs_are_whole_and_never_drift_from_the_exact_sum_by_more_than_half_a_unit_each(
    replies: list[tuple[int, int, int]],
) -> None:
    price = Price("m", input=2_500_000, cached_input=1_250_000, output=10_000_000)
    total = sum(price.cost(prompt, cached, completion) for prompt, cached, completion in replies)
    exact = sum(
        (prompt - min(cached, prompt)) * 2.5 + min(cached, prompt) * 1.25 + completion * 10.0
        for prompt, cached, completion in replies
    )
    assert abs(total - exact) <= 0.5 * len(replies) + 1e-6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[price]]\nmodel = "m"\ninput = -1\noutput = 1\n', "input = -1 is not valid"),
        ('[[price]]\nmodel = "m"\ninput = 0.1234567\noutput = 1\n', "at most 6 decimals"),
        ('[[price]]\nmodel = "m"\ninput = 1\n', "output is missing"),
        ("[[price]]\ninput = 1\noutput = 1\n", "model is missing"),
        ('[[price]]\nmodel = "m"\ninput = 1\noutput = 1\nprice = 2\n', "unknown key 'price'"),
        ('[[price]]\nmodel = "m"\ninput = "cheap"\noutput = 1\n', "input = 'cheap' is not valid"),
        (
            '[[price]]\nmodel = "a"\ninput = 1\noutput = 1\ncurrency = "EUR"\n\n[[price]]\nmodel = "b"\ninput = 1\n'
            "output = 1\n",
            "EUR, USD: one currency per file",
        ),
        ('[[price]]\nmodel = "m"\ninput = 1\noutput = 1\n\n[[price]]\nmodel = "m"\ninput = 2\noutput = 2\n', "earlier"),
    ],
    ids=["negative", "too_precise", "no_output", "no_model", "unknown_key", "not_a_number", "two_currencies", "twice"],
)
def test_a_bad_price_row_is_named(text: str, expected: str) -> None:
    _, problems = parsed(text)
    assert any(expected in problem and "chatsse.toml: [[price]]" in problem for problem in problems), problems


def test_an_upstream_naming_no_price_row_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "chatsse.toml"
    config.write_text(
        '[[upstream]]\nname = "local"\nendpoint = "http://127.0.0.1:9"\ndeployment = "d"\napi_key_env = "K"\n'
        'price = "gpt-4o-mini"\n\n[[price]]\nmodel = "gpt-4o"\ninput = 2.5\noutput = 10\n'
    )
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"CHATSSE_CONFIG": str(config), "K": "k"}, env_file=None)
    assert f"{config}: [[upstream]] 'local': price = 'gpt-4o-mini' names no [[price]] row" in str(refused.value)


QUICK = {"schedule_delay_millis": 50}  # the exporter sends within 50 ms


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as running:
        yield running


def priced(make_gateway: GatewayFactory, simulator: Simulator, **upstream: Any) -> Any:
    prices, problems = parsed(ROWS)
    assert not problems
    return make_gateway(prices=prices, api_keys=("priced-caller-key",), **upstream)


def test_a_replys_cost_is_logged_counted_and_traced_from_its_usage(
    make_gateway: GatewayFactory, simulator: Simulator, caplog: pytest.LogCaptureFixture, stack: ExitStack
) -> None:
    caplog.set_level(logging.INFO, logger="chatsse.access")
    receiver = stack.enter_context(otlp_receiver())
    gateway = priced(make_gateway, simulator, tracing=TracingConfig(endpoint=receiver.url, batch=QUICK))
    auth = AUTH
    # The simulator counts the prompt's words (6) and says 2 came from the cache; it streams 4 words after 3
    # reasoning tokens (7 completion tokens), as model gpt-4o-2024-11-20: the gpt-4o row.
    reply = httpx.post(gateway.url + STREAM, json={"message": "echo:a b c d[sim: cached=2 reasoning=3]"}, headers=auth)
    assert reply.status_code == 200 and '"done":true' in reply.text
    # 4 x 2.5 + 2 x 1.25 + 7 x 10 = 82.5 micro-units: 83, rounded once.
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "chatsse.access"]
    assert lines[-1]["cost_micros"] == 83 and lines[-1]["currency"] == "USD"
    scrape = httpx.get(gateway.url + "/metrics", headers=auth).text
    counted = [line for line in scrape.splitlines() if line.startswith("chatsse_cost_micros_total{")]
    assert len(counted) == 1 and 'currency="USD"' in counted[0] and 'model="gpt-4o"' in counted[0]
    assert float(counted[0].rsplit(" ", 1)[1]) == 83
    [server] = receiver.wait_for(1, kind="SERVER", name="POST /api/v1/chat/stream")
    assert server.attributes["chatsse.cost_micros"] == 83 and server.attributes["chatsse.currency"] == "USD"


def test_an_upstream_names_its_row_and_responses_usage_is_priced_alike(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = priced(make_gateway, simulator, api="azure-v1", protocol="responses")
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key="priced-caller-key", max_retries=0)
    response = sdk.responses.create(model="default", input="echo:priced by the responses usage")
    usage = response.usage
    assert usage is not None and response.model.startswith("gpt-5-codex")
    cached = usage.input_tokens_details.cached_tokens
    expected = (usage.input_tokens - cached) * 1.25 + cached * 0.125 + usage.output_tokens * 10
    scrape = httpx.get(gateway.url + "/metrics", headers=AUTH).text
    counted = [line for line in scrape.splitlines() if line.startswith("chatsse_cost_micros_total{")]
    assert len(counted) == 1 and 'model="gpt-5-codex"' in counted[0]
    assert float(counted[0].rsplit(" ", 1)[1]) == int(expected + 0.5)

    # The same upstream naming its row: its replies are priced by it, whatever model they name.
    named = priced(make_gateway, simulator, api="azure-v1", protocol="responses", price="gpt-4o-mini")
    sdk.close()
    sdk = openai.OpenAI(base_url=named.url + "/v1", api_key="priced-caller-key", max_retries=0)
    sdk.responses.create(model="default", input="echo:priced by name")
    assert 'model="gpt-4o-mini"' in httpx.get(named.url + "/metrics", headers=AUTH).text
    sdk.close()  # its pooled connection, not left to the collector (ResourceWarning)


def test_without_prices_nothing_is_priced(gateway: Any) -> None:
    reply = httpx.post(gateway.url + STREAM, json={"message": "echo:free"})
    assert reply.status_code == 200
    assert "chatsse_cost_micros_total{" not in httpx.get(gateway.url + "/metrics").text
