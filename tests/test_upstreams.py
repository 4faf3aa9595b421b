"""Several upstreams through a real gateway, each a simulator of its own: API shapes, priority failover, cooldowns,
circuits, weights, and what the client, the log line, /health and /metrics say about them."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest

from tests.helpers import chat, kinds, metric, text_of
from tests.servers import FLEET_KEY as KEY
from tests.servers import Fleet

pytestmark = pytest.mark.anyio


async def test_each_api_shape_is_sent_as_that_api_expects(fleet: Fleet) -> None:
    for name in ("classic", "v1", "compatible"):
        fleet.sim(name)
    gateway = fleet.gateway(
        fleet.upstream("classic", model="gpt-4o"),
        fleet.upstream("v1", model="gpt-4.1", api="azure-v1"),
        fleet.upstream("compatible", model="llama", api="openai"),
    )
    async with httpx.AsyncClient() as client:
        for model, name in (("gpt-4o", "classic"), ("gpt-4.1", "v1"), ("llama", "compatible")):
            response, events = await chat(client, gateway.url, {"message": f"echo:via {name}", "model": model})
            assert response.status_code == 200 and text_of(events) == f"via {name}" and "usage" in events[-1]
            assert response.headers["x-chatsse-upstream"] == name
    [classic], [v1], [compatible] = (fleet.sims[n].requests for n in ("classic", "v1", "compatible"))
    assert classic.path == "/openai/deployments/dep-classic/chat/completions"
    assert classic.query == {"api-version": "2024-10-21"} and classic.headers["api-key"] == KEY
    assert "model" not in classic.json and "authorization" not in classic.headers
    assert v1.path == "/openai/v1/chat/completions" and v1.query == {} and v1.headers["api-key"] == KEY
    assert v1.json["model"] == "dep-v1" and v1.json["stream_options"] == {"include_usage": True}
    assert compatible.path == "/v1/chat/completions" and compatible.headers["authorization"] == f"Bearer {KEY}"
    assert compatible.json["model"] == "dep-compatible" and "api-key" not in compatible.headers


async def test_a_429_rests_that_upstream_and_fails_over_at_once(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chatsse.access")
    fleet.sim("ptu", always="status=429 retry_after=30")
    fleet.sim("paygo")
    gateway = fleet.gateway(fleet.upstream("ptu", priority=0), fleet.upstream("paygo", priority=1))
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        response, events = await chat(client, gateway.url, {"message": "echo:overflow"})
        elapsed = time.monotonic() - started
        assert response.status_code == 200 and text_of(events) == "overflow"
        assert response.headers["x-chatsse-upstream"] == "paygo"
        assert elapsed < 5  # safety net: it did not sit out the 30 s the PTU asked for
        # While the PTU rests, requests go straight to the overflow deployment.
        response, _ = await chat(client, gateway.url, {"message": "echo:again"})
        assert response.headers["x-chatsse-upstream"] == "paygo"
        health = (await client.get(gateway.url + "/health")).json()
        metrics = (await client.get(gateway.url + "/metrics")).text
    assert fleet.counts() == {"ptu": 1, "paygo": 2}
    assert health["resting_upstreams"] == ["ptu"]
    assert metric(metrics, 'chatsse_upstream_requests_total{outcome="rate_limited",upstream="ptu"}') == 1
    assert metric(metrics, 'chatsse_upstream_requests_total{outcome="ok",upstream="paygo"}') == 2
    assert metric(metrics, 'chatsse_upstream_cooldowns_total{reason="rate_limited",upstream="ptu"}') == 1
    assert metric(metrics, 'chatsse_upstream_time_to_first_token_seconds_count{upstream="paygo"}') == 2
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "chatsse.access"]
    first = next(line for line in lines if line["route"] == "/api/v1/chat/stream")
    assert first["upstream"] == "paygo" and first["attempts"] == ["ptu:rate_limited", "paygo:ok"]
    assert all(fleet.sims["ptu"].url not in json.dumps(line) for line in lines)


async def test_a_429_asking_for_no_wait_still_moves_on_to_the_next_upstream(fleet: Fleet) -> None:
    fleet.sim("first", always="status=429 retry_after_ms=0")
    fleet.sim("second")
    gateway = fleet.gateway(fleet.upstream("first"), fleet.upstream("second", priority=1))
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            response, _ = await chat(client, gateway.url, {"message": "echo:hi"})
            assert response.status_code == 200 and response.headers["x-chatsse-upstream"] == "second"
    assert fleet.counts() == {"first": 3, "second": 3}  # asked first every time (it rests 0 s), once each


async def test_a_failing_upstream_opens_a_circuit_that_grows_then_closes(fleet: Fleet) -> None:
    primary = fleet.sim("primary", always="status=500")
    fleet.sim("backup")
    gateway = fleet.gateway(fleet.upstream("primary"), fleet.upstream("backup", priority=1))
    async with httpx.AsyncClient() as client:

        async def served_by() -> str:
            response, events = await chat(client, gateway.url, {"message": "echo:ok"})
            assert response.status_code == 200 and kinds(events)[-1] == "done"
            return response.headers["x-chatsse-upstream"]

        async def resting() -> bool:
            return "primary" in (await client.get(gateway.url + "/health")).json()["resting_upstreams"]

        async def rests_for() -> float:
            """How long primary's circuit stays open from now (polled, not slept through)."""
            began = time.monotonic()
            while await resting():
                await asyncio.sleep(0.02)
            return time.monotonic() - began

        for _ in range(3):
            assert await served_by() == "backup"  # primary failed: a third failure of three opens its circuit
        assert await resting() and await served_by() == "backup"  # for 0.5 s, so it is not even tried
        assert fleet.counts() == {"primary": 3, "backup": 4}
        assert await rests_for() < 0.6 + 5  # it closes (a slow machine may poll late)
        for _ in range(3):
            assert await served_by() == "backup"  # tried again, failed again three times: open for 1 s now
        assert fleet.counts()["primary"] == 6
        assert await served_by() == "backup" and fleet.counts()["primary"] == 6  # still resting: not tried
        primary.always = ""  # it recovers
        # The rest grew: the first was 0.5 s in all, so from here it could not last 0.6 s unless it grew (to 1 s).
        assert await rests_for() > 0.6
        assert await served_by() == "primary"
        assert await served_by() == "primary"


async def test_weights_split_traffic_within_a_priority_tier(fleet: Fleet) -> None:
    fleet.sim("heavy")
    fleet.sim("light")
    fleet.sim("spare")
    gateway = fleet.gateway(
        fleet.upstream("heavy", weight=3), fleet.upstream("light", weight=1), fleet.upstream("spare", priority=5)
    )
    async with httpx.AsyncClient() as client:
        for index in range(80):
            response, _ = await chat(client, gateway.url, {"message": f"echo:{index}"})
            assert response.status_code == 200
    counts = fleet.counts()
    assert counts["heavy"] + counts["light"] == 80 and counts["spare"] == 0
    assert counts["heavy"] > counts["light"] > 0


async def test_when_every_upstream_rests_the_soonest_is_awaited_if_the_budget_allows(fleet: Fleet) -> None:
    fleet.sim("east", always="status=429 retry_after=1 times=1")
    fleet.sim("west", always="status=429 retry_after=1 times=1")
    gateway = fleet.gateway(fleet.upstream("east"), fleet.upstream("west"))
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"message": "echo:patience"})
    assert response.status_code == 200 and text_of(events) == "patience"
    assert sum(fleet.counts().values()) == 3  # both refused once, then one of them served


async def test_when_every_upstream_is_rate_limited_past_the_budget_the_client_gets_429(fleet: Fleet) -> None:
    fleet.sim("east", always="status=429 retry_after=20")
    fleet.sim("west", always="status=429 retry_after=7")
    gateway = fleet.gateway(fleet.upstream("east"), fleet.upstream("west", priority=1))
    async with httpx.AsyncClient() as client:
        response, _ = await chat(client, gateway.url, {"message": "hi"})
        assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limited"
        assert response.headers["retry-after"] == "7"  # the soonest end of a cooldown
        assert fleet.counts() == {"east": 1, "west": 1}
        # A request that arrives while all of them rest is answered at once, without calling any.
        response, _ = await chat(client, gateway.url, {"message": "hi"})
    assert response.status_code == 429 and int(response.headers["retry-after"]) in (6, 7)
    assert fleet.counts() == {"east": 1, "west": 1}


async def test_when_every_upstream_fails_the_client_gets_502_with_retry_after(fleet: Fleet) -> None:
    fleet.sim("east", always="status=503")
    fleet.sim("west", always="drop=1")
    gateway = fleet.gateway(fleet.upstream("east"), fleet.upstream("west"), max_retries=1)
    async with httpx.AsyncClient() as client:
        response, _ = await chat(client, gateway.url, {"message": "hi"})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unavailable"
    assert response.headers["retry-after"] == "1"
    # Each was tried, then (after one backoff, the whole retry budget) one of them once more.
    assert sorted(fleet.counts().values()) == [1, 2]


@pytest.mark.parametrize(
    ("always", "status", "code"), [("status=400", 400, "content_filter"), ("status=404", 502, "upstream_not_found")]
)
async def test_answers_that_retrying_cannot_fix_do_not_fail_over(
    fleet: Fleet, always: str, status: int, code: str
) -> None:
    fleet.sim("first", always=always)
    fleet.sim("second")
    gateway = fleet.gateway(fleet.upstream("first"), fleet.upstream("second", priority=1))
    async with httpx.AsyncClient() as client:
        response, _ = await chat(client, gateway.url, {"message": "hi"})
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert fleet.counts() == {"first": 1, "second": 0}


async def test_a_reply_that_has_started_is_never_replayed(fleet: Fleet) -> None:
    fleet.sim("first", always="cut_after=2")
    fleet.sim("second")
    gateway = fleet.gateway(fleet.upstream("first"), fleet.upstream("second", priority=1))
    async with httpx.AsyncClient() as client:
        response, events = await chat(client, gateway.url, {"message": "echo:one two three"})
    assert response.status_code == 200 and kinds(events) == ["content", "content", "error"]
    assert fleet.counts() == {"first": 1, "second": 0}


async def test_model_choice_parameters_and_the_models_route(fleet: Fleet) -> None:
    fleet.sim("small")
    fleet.sim("big")
    gateway = fleet.gateway(
        fleet.upstream("small", model="mini", api="azure-v1", max_tokens=100),
        fleet.upstream("big", model="large"),
    )
    async with httpx.AsyncClient() as client:
        models = await client.get(gateway.url + "/api/v1/models")
        assert models.json() == {"models": ["mini", "large"]}
        response, _ = await chat(client, gateway.url, {"message": "echo:a"})  # no model: the first group
        assert response.headers["x-chatsse-upstream"] == "small"
        body = {"message": "echo:b", "model": "mini", "temperature": 0.2, "top_p": 1, "max_tokens": 5000}
        response, _ = await chat(client, gateway.url, {**body, "reasoning_effort": "low"})
        assert response.status_code == 200
        sent = fleet.sims["small"].requests[-1].json
        assert (sent["temperature"], sent["top_p"], sent["reasoning_effort"]) == (0.2, 1, "low")
        assert sent["max_completion_tokens"] == 100 and "max_tokens" not in sent  # capped by the operator
        response, _ = await chat(client, gateway.url, {"message": "echo:c", "model": "large", "max_tokens": 7})
        assert response.headers["x-chatsse-upstream"] == "big"
        assert fleet.sims["big"].requests[-1].json["max_completion_tokens"] == 7
        url = gateway.url + "/api/v1/chat/stream"
        response = await client.get(url, params={"message": "echo:by get", "model": "large"})
        assert response.headers["x-chatsse-upstream"] == "big" and '"content":" get"' in response.text
        before = fleet.counts()
        for bad in (
            {"message": "x", "model": "gpt-5"},
            {"message": "x", "model": 3},
            {"message": "x", "temperature": 3},
            {"message": "x", "temperature": "hot"},
            {"message": "x", "top_p": -0.1},
            {"message": "x", "max_tokens": 0},
            {"message": "x", "max_tokens": 1.5},
            {"message": "x", "reasoning_effort": "extreme"},
            {"message": "x", "logit_bias": {"1": 100}},
            {"message": "x", "stream": False},
        ):
            response = await client.post(url, json=bad)
            error = response.json()["error"]
            assert response.status_code == 422 and error["code"] == "invalid_request", bad
            named = next(key for key in bad if key != "message")
            assert f'"{named}"' in error["message"], (bad, error)
        response = await client.get(url, params={"message": "x", "model": "nope"})
        assert response.status_code == 422 and '"model"' in response.json()["error"]["message"]
    assert fleet.counts() == before


async def test_every_face_fails_over_the_same_way(fleet: Fleet) -> None:
    fleet.sim("ptu", always="status=429 retry_after=30")
    fleet.sim("paygo")
    gateway = fleet.gateway(fleet.upstream("ptu"), fleet.upstream("paygo", priority=1))
    ui = {"id": "c", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "echo:ui"}]}]}
    completion = {"model": "default", "messages": [{"role": "user", "content": "echo:openai"}]}
    async with httpx.AsyncClient() as client:
        ui_reply = await client.post(gateway.url + "/api/v1/chat/ui", json=ui)
        openai_reply = await client.post(gateway.url + "/v1/chat/completions", json=completion)
    assert ui_reply.headers["x-chatsse-upstream"] == "paygo" and '"delta":"ui"' in ui_reply.text
    assert openai_reply.headers["x-chatsse-upstream"] == "paygo"
    assert openai_reply.json()["choices"][0]["message"]["content"] == "openai"
    assert fleet.counts() == {"ptu": 1, "paygo": 2}  # the PTU asked once, then resting for both faces
