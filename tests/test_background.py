"""Background work that fails loudly and stays bounded (#31): a loop that raises is logged with its traceback,
counted and started again; no request waits on the caller ledger for more than a second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

import httpx
import pytest
import redis

from chatsse.background import Supervised
from chatsse.callers import CallerConfig, CallerTables
from chatsse.callers.keys import key_sha256
from chatsse.resume.keys import STOP_CHANNEL
from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM, metric
from tests.redis_server import RedisServer
from tests.servers import wait_until

KEY = "background-caller-key-5e1"
WORDS = " ".join(f"w{i}" for i in range(12))


def test_a_stop_listener_that_raises_is_started_again_and_counted(
    make_gateway: GatewayFactory, redis_server: RedisServer, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="chatsse")
    reader = make_gateway(redis_url=redis_server.url, resume_seconds=30)
    other = make_gateway(redis_url=redis_server.url, resume_seconds=30)
    with redis.Redis.from_url(redis_server.url) as client:
        # Both listening first: a message sent while one is still subscribing would kill the other alone, and each
        # kill lengthens its backoff.
        assert wait_until(lambda: client.pubsub_numsub(STOP_CHANNEL) == [(STOP_CHANNEL.encode(), 2)], timeout=10)
        assert client.publish(STOP_CHANNEL, b"\xff\xfe not text") == 2
    failures = 'chatsse_background_failures_total{task="redis-stops"} '
    for gateway in (reader, other):
        assert wait_until(lambda g=gateway: failures + "1.0" in httpx.get(g.url + "/metrics").text, timeout=10)
    assert any("redis-stops failed" in r.getMessage() and r.exc_info for r in caplog.records)
    with redis.Redis.from_url(redis_server.url) as client:  # both listening again, started by their supervisors
        assert wait_until(lambda: client.pubsub_numsub(STOP_CHANNEL) == [(STOP_CHANNEL.encode(), 2)], timeout=10)
    # Started again: a stop asked of one process still reaches the one reading the reply.
    with httpx.Client(timeout=30) as client:
        message = {"message": f"echo:{WORDS}[sim: hold_after=2 hold=supervised]"}
        with client.stream("POST", reader.url + STREAM, json=message) as response:
            stream_id = response.headers["x-chatsse-stream"]
            reads = response.iter_bytes()
            next(reads)
            assert wait_until(lambda: client.delete(f"{other.url}{STREAM}/{stream_id}").status_code == 204, 10)
            rest = b"".join(reads).decode()
    assert rest.rstrip().endswith('data: {"done":true,"finish_reason":"stopped"}')
    simulator.release("supervised")


def test_readiness_is_503_while_a_background_loop_keeps_failing_and_liveness_stays_200(
    make_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    gateway = make_gateway(redis_url=redis_server.url, resume_seconds=30)
    ready = httpx.get(gateway.url + "/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["background"]["redis-stops"] == "ok"
    failures = 'chatsse_background_failures_total{task="redis-stops"} '
    with redis.Redis.from_url(redis_server.url) as client:
        for n in range(1, 4):  # the stop listener killed three times in a row, each time once it listens again
            assert wait_until(lambda: client.pubsub_numsub(STOP_CHANNEL) == [(STOP_CHANNEL.encode(), 1)], timeout=10)
            assert client.publish(STOP_CHANNEL, b"\xff\xfe not text") == 1
            assert wait_until(lambda n=n: f"{failures}{n}.0" in httpx.get(gateway.url + "/metrics").text, timeout=10)
    ready = httpx.get(gateway.url + "/health/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "failing"
    assert ready.json()["checks"]["background"]["redis-stops"] == "failing"
    assert httpx.get(gateway.url + "/health/live").status_code == 200
    assert httpx.get(gateway.url + "/health").status_code == 200  # as it always was


def test_a_failing_loop_counts_as_working_again_once_it_stays_up() -> None:
    async def run() -> None:
        attempts = 0

        async def work() -> None:
            nonlocal attempts
            attempts += 1
            if attempts <= 3:
                raise RuntimeError("not yet")
            await asyncio.sleep(60)  # up, and quiet

        loop = Supervised("flaky", work, lambda name: None, recovered_after=0.5)
        task = loop.start()
        while attempts < 4:
            await asyncio.sleep(0.01)
        assert loop.failing  # three in a row, just now
        await asyncio.sleep(0.6)
        assert not loop.failing
        task.cancel()

    asyncio.run(run())


def test_an_admission_waits_at_most_a_second_then_lets_the_request_through(
    make_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    tables = CallerTables((CallerConfig(name="limited", key_sha256=key_sha256(KEY), requests_per_minute=100),))
    gateway = make_gateway(redis_url=redis_server.url, callers=tables)
    auth = {"authorization": f"Bearer {KEY}"}
    assert httpx.post(gateway.url + STREAM, json={"message": "echo:first"}, headers=auth).status_code == 200
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)  # Redis hangs: it neither answers nor closes
    try:
        began = time.monotonic()
        response = httpx.post(gateway.url + STREAM, json={"message": "echo:anyway"}, headers=auth, timeout=30)
        waited = time.monotonic() - began
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert response.status_code == 200 and '"content":"anyway"' in response.text
    assert waited < 4  # the Redis client's own timeout is 4 s: the admission gave up before it, after 1 s
    scrape: Any = httpx.get(gateway.url + "/metrics", headers=auth).text
    assert metric(scrape, "chatsse_admissions_unchecked_total") == 1


def test_a_failed_redis_call_is_counted_once_however_many_events_it_carried(
    make_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    gateway = make_gateway(redis_url=redis_server.url, resume_seconds=30)
    redis_server.kill()  # lost while running: every write of the reply's 100 events fails, and is tried again
    message = {"message": "echo:x[sim: tokens=100 delay=0.01]"}
    response = httpx.post(gateway.url + STREAM, json=message, timeout=30)
    assert response.status_code == 200 and response.text.count('"content"') == 100

    def failures() -> float:
        return metric(httpx.get(gateway.url + "/metrics").text, "chatsse_redis_failures_total")

    # From the second retry on, each carries every event still unsent (about 100 appends): counted one by one, four
    # failed round trips were hundreds; counted once per round trip, they are four.
    assert wait_until(lambda: failures() >= 4, timeout=20)
    assert failures() < 20


@pytest.mark.parametrize("shared", [False, True], ids=["in the process", "on Redis"])
def test_a_chat_id_is_its_callers_own(
    make_gateway: GatewayFactory, redis_server: RedisServer, simulator: Simulator, shared: bool
) -> None:
    """Two callers that send the same useChat chat id each resume their own reply; neither overwrites the other's."""
    keys = ("chat-owner-a-71c", "chat-owner-b-93d")
    redis_url = {"redis_url": redis_server.url} if shared else {}
    gateway = make_gateway(api_keys=keys, resume_seconds=30, **redis_url)
    ui = gateway.url + "/api/v1/chat/ui"
    # On Redis, each resumes through another instance: the chat's mapping is found there, not in the process.
    resume_at = make_gateway(api_keys=keys, resume_seconds=30, **redis_url).url if shared else gateway.url
    resume_at += "/api/v1/chat/ui/same-chat/stream"

    def body(text: str) -> dict[str, Any]:
        return {"id": "same-chat", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": text}]}]}

    with httpx.Client(timeout=30) as client, contextlib.ExitStack() as streams:
        for key, word in zip(keys, ("alpha", "bravo"), strict=True):
            auth = {"authorization": f"Bearer {key}"}
            response = streams.enter_context(
                client.stream("POST", ui, json=body(f"echo:{word} {word}[sim: hold_after=1 hold={word}]"), headers=auth)
            )
            next(response.iter_bytes())
        for key, word in zip(keys, ("alpha", "bravo"), strict=True):
            auth = {"authorization": f"Bearer {key}"}
            deadline = time.monotonic() + 10  # on Redis, the mapping arrives within the writer's next cycle
            while True:
                with client.stream("GET", resume_at, headers=auth) as resumed:
                    if resumed.status_code == 200 or time.monotonic() > deadline:
                        assert resumed.status_code == 200
                        first = next(resumed.iter_bytes()).decode()
                        break
                time.sleep(0.02)
            assert word in first and ({"alpha", "bravo"} - {word}).pop() not in first
        simulator.release("alpha")
        simulator.release("bravo")


def test_a_reply_kept_longer_than_the_live_lifetime_keeps_its_events_as_long(
    make_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    """A reply whose last events and end reach Redis in one writer cycle: its events live as long as its meta
    (CHATSSE_RESUME_SECONDS), not the 600 s of a reply still being written."""
    from chatsse.resume import keys

    gateway = make_gateway(redis_url=redis_server.url, resume_seconds=900)
    response = httpx.post(gateway.url + STREAM, json={"message": "echo:short and done"})
    stream_id = response.headers["x-chatsse-stream"]
    with redis.Redis.from_url(redis_server.url) as client:
        assert wait_until(lambda: client.hget(keys.meta(stream_id), "ended") == b"1", timeout=10)
        events, meta = client.ttl(keys.events(stream_id)), client.ttl(keys.meta(stream_id))
    assert 890 < events <= 901 and 890 < meta <= 901


@pytest.mark.parametrize("shared", [False, True], ids=["in the process", "on Redis"])
def test_a_client_that_leaves_before_the_first_token_gives_its_slot_back_at_once(
    make_gateway: GatewayFactory, redis_server: RedisServer, simulator: Simulator, shared: bool
) -> None:
    """A caller with one open reply whose client gave up on a slow first token may ask again at once: the upstream
    request is closed and the slot given back, not held until the first token (or the lease's 15 minutes)."""
    tables = CallerTables((CallerConfig(name="one", key_sha256=key_sha256(KEY), max_streams=1),))
    shared_state = {"redis_url": redis_server.url} if shared else {}
    gateway = make_gateway(callers=tables, upstream_timeout=90, **shared_state)  # the first token would be waited for
    auth = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=30, headers=auth) as client:
        slow = {"message": "echo:thinking long[sim: first_delay=60]"}
        with contextlib.suppress(httpx.ReadTimeout):  # the client gives up before any byte of the reply
            client.post(gateway.url + STREAM, json=slow, timeout=httpx.Timeout(30, read=1))
        assert wait_until(lambda: simulator.open_connections == 0, timeout=10)  # the upstream request was closed
        again = client.post(gateway.url + STREAM, json={"message": "echo:my turn"})
        assert again.status_code == 200 and '"content":"my"' in again.text
        scrape = client.get(gateway.url + "/metrics").text
    assert 'chatsse_requests_total{route="/api/v1/chat/stream",status="499"} 1.0' in scrape
