"""State shared on a real Redis by real gateway processes: resume on another process, one rate limit for all,
Redis lost and back, metrics summed over workers."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from chatsse.simulator import Simulator
from tests.conftest import API_KEY, DEPLOYMENT
from tests.helpers import STREAM, kinds, metric, text_of
from tests.redis_server import RedisServer
from tests.servers import CHATSSE, chatsse_serve, clean_env, free_port, wait_until

WORDS = " ".join(f"w{i}" for i in range(12))


@pytest.fixture
def two_gateways(
    simulator: Simulator, redis_server: RedisServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, str]]:
    extra: dict[str, str] = getattr(request, "param", {})
    env = {"CHATSSE_REDIS_URL": redis_server.url, "CHATSSE_RESUME_SECONDS": "30", **extra}
    with ExitStack() as stack:
        first = stack.enter_context(
            chatsse_serve(tmp_path, simulator.url, env={"CHATSSE_PING_SECONDS": "0", **env})
        ).url
        second = stack.enter_context(
            chatsse_serve(tmp_path, simulator.url, env={"CHATSSE_PING_SECONDS": "0", **env})
        ).url
        yield first, second


def events_of(source: Any) -> list[Any]:
    return [event for event in source.iter_sse() if event.data]


def start_and_cut(client: httpx.Client, url: str, message: str, count: int) -> tuple[str, list[Any]]:
    with connect_sse(client, "POST", url + STREAM, json={"message": message}) as source:
        assert source.response.status_code == 200
        read = []
        for event in source.iter_sse():
            read.append(event)
            if len(read) == count:
                break
        return source.response.headers["x-chatsse-stream"], read


def test_a_reply_started_on_one_process_resumes_on_the_other(
    two_gateways: tuple[str, str], simulator: Simulator
) -> None:
    first, second = two_gateways
    with httpx.Client(timeout=30) as client:
        stream_id, before = start_and_cut(client, first, f"echo:{WORDS}[sim: hold_after=4 hold=across]", 2)
        headers = {"last-event-id": before[-1].id}
        with connect_sse(client, "GET", f"{second}{STREAM}/{stream_id}", headers=headers) as source:
            assert source.response.status_code == 200
            events = source.iter_sse()
            third = next(e for e in events if e.data)
            simulator.release("across")  # the rest is produced while the second process follows it live
            after = [third, *(e for e in events if e.data)]
    payloads = [json.loads(e.data) for e in before + after]
    assert text_of(payloads) == WORDS and kinds(payloads).count("done") == 1 and kinds(payloads)[-1] == "done"
    assert [e.id for e in after][0] == f"{stream_id}.3"
    assert len(simulator.requests) == 1


@pytest.mark.parametrize("two_gateways", [{"CHATSSE_RATE_LIMIT": "5/minute"}], indirect=True)
def test_one_rate_limit_holds_across_processes(two_gateways: tuple[str, str]) -> None:
    first, second = two_gateways
    statuses = []
    with httpx.Client(timeout=30) as client:
        for index in range(6):
            url = first if index % 2 == 0 else second
            statuses.append(client.post(url + STREAM, json={"message": "echo:hi"}).status_code)
        sixth = client.post(second + STREAM, json={"message": "echo:hi"})
    assert statuses[:5] == [200] * 5 and statuses[5] == 429
    assert sixth.status_code == 429 and sixth.json()["error"]["code"] == "too_many_requests"
    assert int(sixth.headers["retry-after"]) >= 1


@pytest.mark.parametrize("two_gateways", [{"CHATSSE_RATE_LIMIT": "1000/minute"}], indirect=True)
def test_redis_lost_while_running_then_back(
    two_gateways: tuple[str, str], simulator: Simulator, redis_server: RedisServer
) -> None:
    first, second = two_gateways
    with httpx.Client(timeout=30) as client:
        with connect_sse(
            client, "POST", first + STREAM, json={"message": f"echo:{WORDS}[sim: hold_after=3 hold=lost]"}
        ) as source:
            stream_id = source.response.headers["x-chatsse-stream"]
            events = source.iter_sse()
            head = [next(events)]
            redis_server.kill()
            simulator.release("lost")
            received = head + list(events)
        # The connected client got its whole reply; Redis being away cost it nothing.
        assert text_of([json.loads(e.data) for e in received]) == WORDS
        resumed = client.get(f"{second}{STREAM}/{stream_id}")
        assert resumed.status_code == 503 and resumed.json()["error"]["code"] == "resume_unavailable"
        assert resumed.headers["retry-after"] == "1"
        still = client.post(first + STREAM, json={"message": "echo:rate limit fails open"})
        assert still.status_code == 200
        metrics = client.get(first + "/metrics").text
        assert metric(metrics, "chatsse_redis_failures_total") >= 1

        redis_server.start()  # same port: both processes find it again by themselves

        def resumes_on_the_other() -> bool:
            stream_id, _ = start_and_cut(client, first, "echo:back again", 1)
            return client.get(f"{second}{STREAM}/{stream_id}").status_code == 200

        assert wait_until(resumes_on_the_other, timeout=15, interval=0.3)


def test_an_unreachable_redis_refuses_to_start(simulator: Simulator, tmp_path: Path) -> None:
    env = clean_env()
    env.update(
        AZURE_OPENAI_ENDPOINT=simulator.url,
        AZURE_OPENAI_API_KEY=API_KEY,
        AZURE_OPENAI_DEPLOYMENT_NAME=DEPLOYMENT,
        CHATSSE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    result = subprocess.run([CHATSSE, "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "CHATSSE_REDIS_URL: Redis does not answer" in result.stderr and "Traceback" not in result.stderr


def test_metrics_count_every_worker_together(simulator: Simulator, tmp_path: Path) -> None:
    with chatsse_serve(tmp_path, simulator.url, "--workers", "2", env={"CHATSSE_PING_SECONDS": "0"}) as gateway:
        url = gateway.url
        for _ in range(20):
            with httpx.Client(timeout=30) as client:  # a new connection each time: the workers share them out
                assert client.post(url + STREAM, json={"message": "echo:hi"}).status_code == 200
        scrapes = []
        for _ in range(6):
            with httpx.Client(timeout=30) as client:
                scrapes.append(client.get(url + "/metrics").text)
    name = 'chatsse_requests_total{route="/api/v1/chat/stream",status="200"}'
    counts = {metric(text, name) for text in scrapes}
    assert counts == {20.0}  # the same total, whichever worker answered
    assert all("chatsse_active_streams 0.0" in text for text in scrapes)


def test_a_stop_asked_of_one_process_stops_the_reply_another_reads(
    two_gateways: tuple[str, str], simulator: Simulator
) -> None:
    first, second = two_gateways
    with httpx.Client(timeout=30) as client:
        with client.stream(
            "POST", first + STREAM, json={"message": f"echo:{WORDS}[sim: hold_after=2 hold=x-stop]"}
        ) as r:
            stream_id = r.headers["x-chatsse-stream"]
            reads = r.iter_bytes()
            next(reads)
            upstream = simulator.requests[-1]
            stopped = client.delete(f"{second}{STREAM}/{stream_id}")
            asked_at = time.monotonic()
            rest = b"".join(reads).decode()
        assert stopped.status_code == 204
        assert wait_until(lambda: upstream.peer_closed_at is not None, timeout=5)
        assert upstream.peer_closed_at is not None and upstream.peer_closed_at - asked_at < 1.0
        assert rest.rstrip().endswith('data: {"done":true,"finish_reason":"stopped"}')
        ended = f"{second}{STREAM}/{stream_id}"  # nothing left to stop, once its end has reached Redis
        assert wait_until(lambda: client.delete(ended).status_code == 404, timeout=5)
        assert client.delete(f"{second}{STREAM}/{'0' * 32}").status_code == 404


def test_a_reply_whose_reader_died_before_writing_it_is_lost_not_unknown(
    simulator: Simulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    # A reader killed within the writer's first cycle leaves no trace of the reply on Redis; the id still names its
    # reader, so followers are told stream_lost, as for a reader killed later. An id no process made stays 404.
    env = {"CHATSSE_REDIS_URL": redis_server.url, "CHATSSE_RESUME_SECONDS": "30", "CHATSSE_PING_SECONDS": "0"}
    with ExitStack() as stack, httpx.Client(timeout=30) as client:
        doomed = stack.enter_context(chatsse_serve(tmp_path, simulator.url, env=env))
        other = stack.enter_context(chatsse_serve(tmp_path, simulator.url, env=env)).url
        clean = stack.enter_context(chatsse_serve(tmp_path, simulator.url, env=env))
        ids = {}
        for name, gateway in (("doomed", doomed), ("clean", clean)):
            response = client.post(gateway.url + STREAM, json={"message": "echo:hi"})
            assert response.status_code == 200
            ids[name] = response.headers["x-chatsse-stream"]
        doomed.process.kill()
        clean.stop()
        never = ids["doomed"][:16] + "0" * 16  # a reply the dead reader started as it died: it never reached Redis
        started = time.monotonic()
        with connect_sse(client, "GET", f"{other}{STREAM}/{never}") as source:
            assert source.response.status_code == 200
            [event] = [json.loads(e.data) for e in source.iter_sse() if e.data]
        assert event["error"]["code"] == "stream_lost" and time.monotonic() - started < 5
        for unknown in (ids["clean"][:16] + "0" * 16, "ab" + "0" * 30):  # a cleanly stopped reader's; no one's
            assert client.get(f"{other}{STREAM}/{unknown}").status_code == 404
        # Long after its start, a dead reader's stream with no trace is one that expired: 404, at once.
        old = ids["doomed"][:10] + f"{(int(time.time()) - 600) % 2**24:06x}" + "0" * 16
        started = time.monotonic()
        assert client.get(f"{other}{STREAM}/{old}").status_code == 404
        assert time.monotonic() - started < 1
