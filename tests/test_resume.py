"""Resumable streams kept in the process, through a real gateway: ids, resume, detach, expiry, gaps, followers."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM, kinds, metric, text_of
from tests.servers import RunningServer, wait_until

pytestmark = pytest.mark.anyio

WORDS = " ".join(f"w{i}" for i in range(12))  # 12 content events: "w0", " w1", ...


def payloads(events: list[ServerSentEvent]) -> list[dict[str, Any]]:
    return [json.loads(event.data) for event in events if event.data]


async def first_events(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], count: int
) -> tuple[str, list[ServerSentEvent]]:
    """Start a chat, read `count` events, hang up; returns the stream id and what was read."""
    async with aconnect_sse(client, "POST", url + STREAM, json=body) as source:
        assert source.response.status_code == 200
        stream_id = source.response.headers["x-chatsse-stream"]
        read: list[ServerSentEvent] = []
        async for event in source.aiter_sse():
            read.append(event)
            if len(read) == count:
                break
    return stream_id, read


async def resume(
    client: httpx.AsyncClient, url: str, stream_id: str, last: str | None, how: str = "header"
) -> tuple[httpx.Response, list[ServerSentEvent]]:
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if last is not None:
        (headers if how == "header" else params)["last-event-id" if how == "header" else "last_event_id"] = last
    async with aconnect_sse(client, "GET", f"{url}{STREAM}/{stream_id}", headers=headers, params=params) as source:
        if source.response.status_code != 200:
            await source.response.aread()
            return source.response, []
        return source.response, [event async for event in source.aiter_sse() if event.data]  # not the retry hint


@pytest.fixture
def resumable(make_gateway: GatewayFactory) -> RunningServer:
    return make_gateway(resume_seconds=30)


async def test_every_event_has_an_id_and_the_response_names_the_stream(resumable: RunningServer) -> None:
    async with (
        httpx.AsyncClient() as client,
        aconnect_sse(client, "POST", resumable.url + STREAM, json={"message": f"echo:{WORDS}"}) as source,
    ):
        stream_id = source.response.headers["x-chatsse-stream"]
        events = [event async for event in source.aiter_sse()]
    assert re.fullmatch(r"[0-9a-f]{32}", stream_id)  # 128 random bits
    assert [event.id for event in events] == [f"{stream_id}.{n}" for n in range(1, len(events) + 1)]
    assert text_of(payloads(events)) == WORDS and kinds(payloads(events))[-1] == "done"


@pytest.mark.parametrize("how", ["header", "query"])
async def test_a_cut_reply_resumes_after_the_last_event_without_asking_again(
    resumable: RunningServer, simulator: Simulator, how: str
) -> None:
    body = {"message": f"echo:{WORDS}[sim: hold_after=4 hold=cut-{how}]"}
    async with httpx.AsyncClient() as client:
        stream_id, before = await first_events(client, resumable.url, body, 2)
        upstream = simulator.requests[-1]
        time.sleep(0.3)
        assert upstream.peer_closed_at is None  # the client left; the reply goes on
        simulator.release(f"cut-{how}")
        response, after = await resume(client, resumable.url, stream_id, before[-1].id, how)
    assert response.status_code == 200 and response.headers["x-chatsse-stream"] == stream_id
    assert after[0].id == f"{stream_id}.3"
    assert text_of(payloads(before) + payloads(after)) == WORDS and kinds(payloads(after))[-1] == "done"
    assert len(simulator.requests) == 1


async def test_without_a_last_id_the_reply_comes_from_the_start_and_two_followers_get_it_all(
    resumable: RunningServer, simulator: Simulator
) -> None:
    body = {"message": f"echo:{WORDS}[sim: hold_after=3 hold=two-tabs]"}
    async with httpx.AsyncClient() as client, aconnect_sse(client, "POST", resumable.url + STREAM, json=body) as first:
        stream_id = first.response.headers["x-chatsse-stream"]
        events = first.aiter_sse()
        one = [await anext(events)]
        async with aconnect_sse(client, "GET", f"{resumable.url}{STREAM}/{stream_id}") as second:
            other = second.aiter_sse()
            two = [await anext(other)]
            simulator.release("two-tabs")
            one += [event async for event in events]
            two += [event async for event in other]
            two = [event for event in two if event.data]  # not the retry hint
    assert [e.id for e in one] == [e.id for e in two]
    assert text_of(payloads(one)) == text_of(payloads(two)) == WORDS
    assert len(simulator.requests) == 1


async def test_a_native_eventsource_reconnect_continues_the_reply(
    resumable: RunningServer, simulator: Simulator
) -> None:
    params = {"message": f"echo:{WORDS}"}
    async with httpx.AsyncClient() as client:
        async with aconnect_sse(client, "GET", resumable.url + STREAM, params=params) as source:
            events = source.aiter_sse()
            first = await anext(events)
            second = await anext(events)
        assert first.retry == 1500  # come back soon: the reply will be there
        # What EventSource does after a drop: the same URL again, with the last id it saw.
        headers = {"last-event-id": second.id}
        async with aconnect_sse(client, "GET", resumable.url + STREAM, params=params, headers=headers) as source:
            rest = [event async for event in source.aiter_sse()]
    assert text_of(payloads([first, second] + rest)) == WORDS
    assert len(simulator.requests) == 1


async def test_unknown_and_other_callers_streams_are_404_alike(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(resume_seconds=30, api_keys=("key-alice", "key-bob"))
    alice, bob = ({"authorization": f"Bearer {key}"} for key in ("key-alice", "key-bob"))
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.url + STREAM, json={"message": "echo:mine"}, headers=alice)
        stream_id = response.headers["x-chatsse-stream"]
        own = await client.get(f"{gateway.url}{STREAM}/{stream_id}", headers=alice)
        other = await client.get(f"{gateway.url}{STREAM}/{stream_id}", headers=bob)
        unknown = await client.get(f"{gateway.url}{STREAM}/{'0' * 32}", headers=alice)
        malformed = await client.get(f"{gateway.url}{STREAM}/{stream_id}", headers={**alice, "last-event-id": "x"})
    assert own.status_code == 200 and '"content":"mine"' in own.text
    for refused in (other, unknown):
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "stream_not_found"
    assert other.json()["error"]["message"] == unknown.json()["error"]["message"]
    assert malformed.status_code == 422


async def test_nobody_back_within_the_window_closes_the_upstream_and_forgets_the_reply(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway(resume_seconds=0.5)
    body = {"message": f"echo:{WORDS}[sim: hold_after=3 hold=never]"}
    async with httpx.AsyncClient() as client:
        stream_id, _ = await first_events(client, gateway.url, body, 1)
        upstream = simulator.requests[-1]
        left_at = time.monotonic()
        assert wait_until(lambda: upstream.peer_closed_at is not None, timeout=5)
        assert upstream.peer_closed_at is not None and upstream.peer_closed_at - left_at >= 0.4
        response, _ = await resume(client, gateway.url, stream_id, None)
    assert response.status_code == 404
    assert wait_until(lambda: gateway.open_tasks() == 0)


async def test_a_resume_from_before_the_kept_events_is_410(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(resume_seconds=30, resume_max_bytes=1024)
    async with httpx.AsyncClient() as client:
        stream_id, first = await first_events(client, gateway.url, {"message": "hi [sim: tokens=200]"}, 1)
        time.sleep(0.3)  # the reply finishes without anyone; its oldest events are dropped beyond 1 KB
        gap, _ = await resume(client, gateway.url, stream_id, first[0].id)
        late, tail = await resume(client, gateway.url, stream_id, f"{stream_id}.200")
        metrics = (await client.get(gateway.url + "/metrics")).text
    assert gap.status_code == 410 and gap.json()["error"]["code"] == "resume_gap"
    assert late.status_code == 200 and kinds(payloads(tail)) == ["done"]
    assert "chatsse_resume_gaps_total 1.0" in metrics and "chatsse_resumes_total 1.0" in metrics
    assert "chatsse_streams_kept 1.0" in metrics


async def test_resume_off_sends_no_ids_and_has_no_resume_route(gateway: RunningServer) -> None:
    async with (
        httpx.AsyncClient() as client,
        aconnect_sse(client, "POST", gateway.url + STREAM, json={"message": "echo:plain"}) as source,
    ):
        events = [event async for event in source.aiter_sse()]
        assert "x-chatsse-stream" not in source.response.headers
        missing = await client.get(f"{gateway.url}{STREAM}/{'0' * 32}")
    assert all(event.id == "" for event in events)
    assert missing.status_code == 404


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, 6), min_size=1, max_size=4), split=st.sampled_from([0, 1, 7]))
def test_cut_anywhere_and_resume_from_the_last_id_gives_the_whole_reply(
    resumable: RunningServer, cuts: list[int], split: int
) -> None:
    text = "Resume 😀 me, " + WORDS + " \u2028end"
    body = {"message": f"echo:{text}[sim: delay=0.005 split={split}]"}
    received: list[dict[str, Any]] = []
    with httpx.Client(timeout=10) as client:
        with connect_sse(client, "POST", resumable.url + STREAM, json=body) as source:
            stream_id = source.response.headers["x-chatsse-stream"]
            last = None
            for index, event in enumerate(source.iter_sse(), start=1):
                received.append(json.loads(event.data))
                last = event.id
                if index == cuts[0]:
                    break
        for cut in cuts[1:] + [10_000]:
            headers = {"last-event-id": last} if last else {}
            with connect_sse(client, "GET", f"{resumable.url}{STREAM}/{stream_id}", headers=headers) as source:
                assert source.response.status_code == 200
                events = (event for event in source.iter_sse() if event.data)  # not the retry hint
                for index, event in enumerate(events, start=1):
                    received.append(json.loads(event.data))
                    last = event.id
                    if index == cut:
                        break
    assert text_of(received) == text and kinds(received)[-1] == "done"
    assert kinds(received).count("done") == 1


async def test_delete_stops_a_kept_reply_for_its_caller_only(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = make_gateway(resume_seconds=30, api_keys=("stop-key-a", "stop-key-b"))
    owner, stranger = {"authorization": "Bearer stop-key-a"}, {"authorization": "Bearer stop-key-b"}
    async with httpx.AsyncClient(headers=owner) as client:
        body = {"message": f"echo:{WORDS}[sim: hold_after=2 hold=stop]"}
        async with aconnect_sse(client, "POST", gateway.url + STREAM, json=body) as source:
            stream_id = source.response.headers["x-chatsse-stream"]
            events = source.aiter_sse()
            first = [json.loads((await anext(events)).data) for _ in range(2)]
            not_theirs = await client.delete(f"{gateway.url}{STREAM}/{stream_id}", headers=stranger)
            assert not_theirs.status_code == 404 and not_theirs.json()["error"]["code"] == "stream_not_found"
            upstream = simulator.requests[-1]
            assert upstream.peer_closed_at is None
            stopped = await client.delete(f"{gateway.url}{STREAM}/{stream_id}")
            stopped_at = time.monotonic()
            rest = [json.loads(e.data) async for e in events if e.data]
        assert stopped.status_code == 204
        assert wait_until(lambda: upstream.peer_closed_at is not None, timeout=5)
        assert upstream.peer_closed_at is not None and upstream.peer_closed_at - stopped_at < 1.0
        assert text_of(first) == "w0 w1" and rest == [{"done": True, "finish_reason": "stopped"}]
        again, replay = await resume(client, gateway.url, stream_id, None)  # a follower after the stop sees it too
        assert again.status_code == 200 and payloads(replay)[-1] == {"done": True, "finish_reason": "stopped"}
        gone = await client.delete(f"{gateway.url}{STREAM}/{stream_id}")  # nothing left to stop
        assert gone.status_code == 404


async def test_a_stopped_reply_is_charged_for_what_was_relayed(
    make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    from chatsse.callers import CallerConfig, CallerTables
    from chatsse.callers.keys import key_sha256

    partner = CallerConfig(name="partner", key_sha256=key_sha256("stop-charge"), tokens_per_minute=1000)
    gateway = make_gateway(resume_seconds=30, callers=CallerTables((partner,)))
    async with httpx.AsyncClient(headers={"authorization": "Bearer stop-charge"}) as client:
        body = {"message": f"echo:{WORDS}[sim: hold_after=4 hold=stop-charge]"}
        stream_id, _ = await first_events(client, gateway.url, body, 4)
        assert (await client.delete(f"{gateway.url}{STREAM}/{stream_id}")).status_code == 204
        stopped = time.monotonic()
        assert wait_until(lambda: "estimated" in httpx.get(gateway.url + "/metrics", headers=client.headers).text)
        metrics = (await client.get(gateway.url + "/metrics")).text
        usage = (await client.get(gateway.url + "/api/v1/usage")).json()
        refilled = (time.monotonic() - stopped) * 1000 / 60  # the bucket refills by the second
    # No usage came from the upstream: "echo:w0 ... w11[...]" and "w0 w1 w2 w3" are estimated at 4 characters a token.
    estimated = 'chatsse_tokens_total{caller="partner",model="default",type="estimated"}'
    assert metric(metrics, estimated) > 0
    assert usage["tokens_per_minute"]["remaining"] <= 1000 - metric(metrics, estimated) + 1 + refilled
