"""The kept replies' writes to Redis (#31): keys renewed while a reply runs, a byte-bounded queue that sheds events
(never a reply's start) and tells followers `resume_gap`, and writes Redis refuses (out of memory) counted and
logged once per burst while the stream being read goes on unhurt. Real gateways on a real redis-server."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from chatsse.resume import keys
from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM, kinds, metric, text_of
from tests.redis_server import RedisServer
from tests.servers import wait_until

KEY = "writer-caller-key-4d2"
WORDS = " ".join(f"w{i}" for i in range(12))


def follow(client: httpx.Client, url: str, stream_id: str) -> tuple[int, list[dict[str, Any]]]:
    """Follow a kept reply from its start: the status, and every event to the stream's end."""
    with connect_sse(client, "GET", f"{url}{STREAM}/{stream_id}") as source:
        if source.response.status_code != 200:
            return source.response.status_code, []
        return 200, [json.loads(event.data) for event in source.iter_sse() if event.data]


def scrape(url: str, name: str) -> float:
    return metric(httpx.get(url + "/metrics").text, name)


@pytest.mark.timeout(90)
def test_a_reply_longer_than_its_keys_first_lifetime_stays_followable_to_its_end_and_after(
    make_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    # Keys first live 3 + 2 + 1 = 6 s; the reply takes 8 s, and a follower on another instance joins after 7.
    settings = {"redis_url": redis_server.url, "resume_seconds": 2, "resume_key_seconds": 3, "api_keys": (KEY,)}
    reader, other = make_gateway(**settings), make_gateway(**settings)
    with httpx.Client(timeout=30, headers={"authorization": f"Bearer {KEY}"}) as client:
        message = {"message": "echo:x[sim: tokens=16 delay=0.5]"}
        with connect_sse(client, "POST", reader.url + STREAM, json=message) as source:
            stream_id = source.response.headers["x-chatsse-stream"]
            began, read, events = time.monotonic(), [], source.iter_sse()
            for event in events:
                read.append(json.loads(event.data))
                if time.monotonic() - began > 7:
                    break
            status, followed = follow(client, other.url, stream_id)  # to its end, live
            read += [json.loads(event.data) for event in events if event.data]
        assert status == 200 and followed == read and kinds(read)[-1] == "done" and kinds(read).count("content") == 16
        assert time.monotonic() - began > 6  # the first lifetime was over while it streamed
        status, again = follow(client, other.url, stream_id)  # within the resume window after its end
        assert status == 200 and again == read
    with redis.Redis.from_url(redis_server.url) as client:
        events, meta = client.pttl(keys.events(stream_id)), client.pttl(keys.meta(stream_id))
        assert 0 < events <= meta + 50 and meta <= 3000  # its end set both to the window: events never outlive meta
        assert wait_until(lambda: not client.exists(keys.events(stream_id), keys.meta(stream_id)), timeout=10)


def test_past_its_byte_bound_the_write_queue_sheds_events_and_followers_get_resume_gap(
    make_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    reader = make_gateway(redis_url=redis_server.url, resume_seconds=30, resume_queue_bytes=1024)
    other = make_gateway(redis_url=redis_server.url, resume_seconds=30)
    redis_server.kill()  # every write waits for Redis: 300 events of about 20 bytes overflow 1 KiB
    response = httpx.post(reader.url + STREAM, json={"message": "echo:x[sim: tokens=300]"}, timeout=30)
    assert response.status_code == 200 and response.text.count('"content"') == 300  # its client lost nothing
    stream_id = response.headers["x-chatsse-stream"]
    assert 1024 >= scrape(reader.url, "chatsse_resume_queue_bytes") > 0
    shed = scrape(reader.url, "chatsse_resume_events_shed_total")
    assert 200 < shed < 301  # of its 301 events (the done included)
    redis_server.start()  # same port: the queue (the reply's start and end included) reaches it
    assert wait_until(lambda: scrape(reader.url, "chatsse_resume_queue_bytes") == 0, timeout=15)
    with httpx.Client(timeout=30) as client:
        status, followed = follow(client, other.url, stream_id)
    # Its start was never shed (not 404): a follower gets what was kept, up to the first shed event (the later ones
    # were shed with it), then learns from the reply's end that the rest is gone.
    sent = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    assert status == 200 and len(followed) - 1 == 301 - shed and followed[:-1] == sent[: len(followed) - 1]
    assert followed[-1]["error"]["code"] == "resume_gap"


@pytest.mark.timeout(90)
def test_redis_out_of_memory_is_counted_and_logged_once_and_the_stream_read_goes_on(
    make_gateway: GatewayFactory, redis_server: RedisServer, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="chatsse")
    reader = make_gateway(redis_url=redis_server.url, resume_seconds=30)
    other = make_gateway(redis_url=redis_server.url, resume_seconds=30)
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("maxmemory-policy", "noeviction")
    with httpx.Client(timeout=30) as client:
        message = {"message": f"echo:{WORDS}[sim: hold_after=3 hold=full]"}
        with connect_sse(client, "POST", reader.url + STREAM, json=message) as source:
            stream_id = source.response.headers["x-chatsse-stream"]
            events = source.iter_sse()
            head = [json.loads(next(e for e in events if e.data).data)]
            with connect_sse(client, "GET", f"{other.url}{STREAM}/{stream_id}") as follower:
                assert follower.response.status_code == 200
                followed = follower.iter_sse()
                first = json.loads(next(e for e in followed if e.data).data)
                admin.config_set("maxmemory", 1)  # every write that needs memory is refused from now on
                simulator.release("full")
                rest = [json.loads(e.data) for e in events if e.data]
                began = time.monotonic()
                tail = [first, *(json.loads(e.data) for e in followed if e.data)]
        read = head + rest
        assert text_of(read) == WORDS and kinds(read)[-1] == "done"  # the client of the reply lost nothing
        assert tail[-1]["error"]["code"] in ("resume_unavailable", "resume_gap")  # a clear end, within seconds
        assert time.monotonic() - began < 15
        assert wait_until(lambda: scrape(reader.url, "chatsse_resume_writes_refused_total") >= 1, timeout=10)
        refused = scrape(reader.url, "chatsse_resume_writes_refused_total")
        again = client.post(reader.url + STREAM, json={"message": "echo:still full"})
        assert again.status_code == 200 and '"content":"still"' in again.text
        assert wait_until(lambda: scrape(reader.url, "chatsse_resume_writes_refused_total") > refused, timeout=10)

        admin.config_set("maxmemory", 0)
        after = client.post(reader.url + STREAM, json={"message": "echo:room again"})
        assert wait_until(lambda: follow(client, other.url, after.headers["x-chatsse-stream"])[0] == 200, 10)
    admin.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis refused" in m for m in messages) == 1, messages  # one burst, one line
    assert sum("takes kept-reply writes again" in m for m in messages) == 1
    assert not any("unreachable" in m for m in messages)  # refused is not lost: Redis answered all along


def test_an_append_redis_refuses_is_counted_and_its_followers_get_resume_gap(
    make_gateway: GatewayFactory, redis_server: RedisServer, simulator: Simulator
) -> None:
    """Not swallowed by the append script: an XADD refused for anything but a duplicate id (here a wrong type)."""
    reader = make_gateway(redis_url=redis_server.url, resume_seconds=30)
    other = make_gateway(redis_url=redis_server.url, resume_seconds=30)
    with httpx.Client(timeout=30) as client, redis.Redis.from_url(redis_server.url) as admin:
        message = {"message": f"echo:{WORDS}[sim: hold_after=3 hold=wrongtype]"}
        with connect_sse(client, "POST", reader.url + STREAM, json=message) as source:
            stream_id = source.response.headers["x-chatsse-stream"]
            events = source.iter_sse()
            next(e for e in events if e.data)
            assert wait_until(lambda: admin.exists(keys.events(stream_id)), timeout=10)
            admin.delete(keys.events(stream_id))
            admin.set(keys.events(stream_id), "not a stream")  # every later XADD to it is refused: WRONGTYPE
            simulator.release("wrongtype")
            read = [json.loads(e.data) for e in events if e.data]
        assert kinds(read)[-1] == "done"
        assert wait_until(lambda: scrape(reader.url, "chatsse_resume_writes_refused_total") >= 1, timeout=10)
        assert wait_until(lambda: admin.hget(keys.meta(stream_id), "gap") == b"1", timeout=10)
        admin.delete(keys.events(stream_id))
        admin.xadd(keys.events(stream_id), {"e": b'{"content":"w0"}'}, id="0-1")
        status, followed = follow(client, other.url, stream_id)
    assert status == 200 and followed == [{"content": "w0"}, {"error": followed[-1]["error"]}]
    assert followed[-1]["error"]["code"] == "resume_gap"
