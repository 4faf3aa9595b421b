"""Past one Redis: real `chatsse serve` processes sharing kept replies, stops and callers' limits through a real Redis
Cluster (detected, with TLS and an ACL user) and through a single TLS Redis; and a reply whose reading instance is
SIGKILLed ends with `stream_lost` for its followers within seconds, never at the end of the upstream timeout."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from chatsse.resume.keys import STOP_CHANNEL
from chatsse.simulator import Simulator
from tests.conftest import API_KEY, DEPLOYMENT
from tests.helpers import STREAM, kinds, metric, text_of
from tests.redis_server import RedisClusterNodes, RedisServer, Tls
from tests.servers import CHATSSE, GatewayProcess, chatsse_serve, clean_env, free_port, wait_until

WORDS = " ".join(f"w{i}" for i in range(12))
CALLERS = (
    '[[caller]]\nname = "a"\nkey_env = "A_KEY"\nrequests_per_minute = 1000\n\n'
    '[[caller]]\nname = "q"\nkey_env = "Q_KEY"\ntoken_quota = 30\nquota_period = "day"\n'
)
KEY = {"authorization": "Bearer key-of-a"}


@contextmanager
def gateways(
    tmp_path: Path, simulator: Simulator, url: str, count: int = 2, **env: str
) -> Iterator[list[GatewayProcess]]:
    config = tmp_path / "chatsse.toml"
    config.write_text(
        f'[[upstream]]\nname = "sim"\nendpoint = "{simulator.url}"\ndeployment = "{DEPLOYMENT}"\n'
        f'api_key_env = "SIM_KEY"\n\n{CALLERS}'
    )
    environment = {
        "CHATSSE_CONFIG": str(config),
        "SIM_KEY": API_KEY,
        "A_KEY": "key-of-a",
        "Q_KEY": "key-of-q",
        "CHATSSE_REDIS_URL": url,
        "CHATSSE_RESUME_SECONDS": "30",
        "CHATSSE_PING_SECONDS": "0",
        **env,
    }
    with ExitStack() as stack:
        yield [stack.enter_context(chatsse_serve(tmp_path, None, env=environment)) for _ in range(count)]


def start_and_cut(client: httpx.Client, url: str, message: str, count: int) -> tuple[str, list[Any]]:
    """POST a chat, read `count` events, then drop the connection (as a page reload would)."""
    with connect_sse(client, "POST", url + STREAM, json={"message": message}, headers=KEY) as source:
        assert source.response.status_code == 200, source.response.read()
        read = []
        for event in source.iter_sse():
            read.append(event)
            if len(read) == count:
                break
        return source.response.headers["x-chatsse-stream"], read


def follow(client: httpx.Client, url: str, stream_id: str, after: str, release: Any = None) -> list[Any]:
    with connect_sse(client, "GET", f"{url}{STREAM}/{stream_id}", headers={**KEY, "last-event-id": after}) as source:
        assert source.response.status_code == 200
        events = source.iter_sse()
        first = next(e for e in events if e.data)
        if release is not None:
            release()
        return [first, *(e for e in events if e.data)]


def payloads(events: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in events]


def stop_listeners(cluster: RedisClusterNodes) -> int:
    """The sharded subscribers to the stop channel, over the cluster's nodes."""
    total = 0
    for port in cluster.processes:
        with cluster.client(port) as node:
            total += node.execute_command("PUBSUB", "SHARDNUMSUB", STOP_CHANNEL)[1]
    return total


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls.make(tmp_path_factory.mktemp("tls"))


def test_replies_stops_and_quotas_are_shared_through_a_tls_cluster(
    tmp_path: Path, simulator: Simulator, tls: Tls
) -> None:
    cluster = RedisClusterNodes(tmp_path / "cluster", primaries=3, tls=tls, acl=True)
    cluster.start()
    try:
        # No CHATSSE_REDIS_CLUSTER: the gateways find the cluster themselves (a single-Redis client would get
        # MOVED answers for the keys of two of the three nodes, and nothing would resume).
        with gateways(tmp_path, simulator, cluster.url, CHATSSE_REDIS_CA_FILE=str(tls.ca)) as (first, second):
            with httpx.Client(timeout=30) as client:
                for round_ in range(6):  # streams of several processes' buckets land on every node
                    stream_id, before = start_and_cut(
                        client, first.url, f"echo:{WORDS}[sim: hold_after=4 hold=c{round_}]", 2
                    )
                    after = follow(
                        client, second.url, stream_id, before[-1].id, lambda r=round_: simulator.release(f"c{r}")
                    )
                    assert text_of(payloads(before + after)) == WORDS and kinds(payloads(after))[-1] == "done"
                stream_id, _ = start_and_cut(client, first.url, f"echo:{WORDS}[sim: hold_after=3 hold=stop]", 1)
                # Both stop listeners subscribed (each retries a second after a cluster that was not ready for it).
                assert wait_until(lambda: stop_listeners(cluster) == 2, timeout=10)
                stopped = client.delete(f"{second.url}{STREAM}/{stream_id}", headers=KEY)
                assert stopped.status_code == 204  # heard by the first process, through sharded pub/sub
                ended = follow(client, second.url, stream_id, f"{stream_id}.1")
                assert payloads(ended)[-1] == {"done": True, "finish_reason": "stopped"}
                five = {"message": "echo:" + " ".join("x" * 5)}  # 5 prompt and 5 completion tokens
                quota = {"authorization": "Bearer key-of-q"}
                statuses = [
                    client.post(url + STREAM, json=five, headers=quota).status_code
                    for url in (first.url, second.url, first.url, second.url)
                ]
                assert statuses == [200, 200, 200, 403]  # one quota for both processes
        every = {}
        for port in cluster.primaries():
            node = cluster.client(port)
            every.update({k if isinstance(k, str) else k.decode(): port for k in node.keys("chatsse:*")})
            node.close()
        node = cluster.client(cluster.ports[0])
        by_stream: dict[str, set[int]] = {}
        for key in every:
            if key.startswith("chatsse:{s:") and ":alive:" not in key:
                by_stream.setdefault(key.rsplit(":", 1)[0], set()).add(node.cluster("keyslot", key))
        assert by_stream and all(len(slots) == 1 for slots in by_stream.values())  # each stream in one slot
        caller_slots = {node.cluster("keyslot", key) for key in every if key.startswith("chatsse:{c:q}")}
        assert len(caller_slots) == 1
        node.close()
    finally:
        cluster.kill_all()


def test_a_single_redis_over_tls_with_an_acl_user(tmp_path: Path, simulator: Simulator, tls: Tls) -> None:
    server = RedisServer(tmp_path, tls=tls, acl=True)
    server.start()
    try:
        with gateways(tmp_path, simulator, server.url, CHATSSE_REDIS_CA_FILE=str(tls.ca)) as (first, second):
            with httpx.Client(timeout=30) as client:
                stream_id, before = start_and_cut(client, first.url, f"echo:{WORDS}[sim: hold_after=4 hold=tls]", 2)
                after = follow(client, second.url, stream_id, before[-1].id, lambda: simulator.release("tls"))
        assert text_of(payloads(before + after)) == WORDS
    finally:
        server.kill()


def test_a_wrong_password_or_ca_is_refused_at_start(tmp_path: Path, simulator: Simulator, tls: Tls) -> None:
    server = RedisServer(tmp_path, tls=tls, acl=True)
    server.start()
    try:
        for url, ca in ((server.url.replace("s3cret", "wrong"), str(tls.ca)), (server.url, None)):
            env = clean_env(
                AZURE_OPENAI_ENDPOINT=simulator.url,
                AZURE_OPENAI_API_KEY=API_KEY,
                AZURE_OPENAI_DEPLOYMENT_NAME=DEPLOYMENT,
                CHATSSE_REDIS_URL=url,
                **({"CHATSSE_REDIS_CA_FILE": ca} if ca else {}),
            )
            started = subprocess.run(
                [CHATSSE, "serve", "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=30
            )
            assert started.returncode == 2 and "CHATSSE_REDIS_URL: Redis does not answer" in started.stderr
            assert "s3cret" not in started.stderr and "wrong" not in started.stderr  # the password stays out
    finally:
        server.kill()


@pytest.mark.parametrize("backend", ["single", "cluster"])
def test_followers_learn_within_seconds_that_the_reader_died(
    tmp_path: Path, simulator: Simulator, backend: str
) -> None:
    store: RedisServer | RedisClusterNodes
    store = RedisServer(tmp_path) if backend == "single" else RedisClusterNodes(tmp_path / "cluster", primaries=3)
    store.start()
    try:
        # A long upstream timeout: before #20 a follower waited all of it, then was told Azure went silent.
        with gateways(tmp_path, simulator, store.url, CHATSSE_UPSTREAM_TIMEOUT="120") as (reader, other):
            with httpx.Client(timeout=30) as client:
                stream_id, before = start_and_cut(client, reader.url, f"echo:{WORDS}[sim: hold_after=5 hold=die]", 3)
                got: list[Any] = []
                following = threading.Thread(
                    target=lambda: got.extend(follow(client, other.url, stream_id, before[-1].id))
                )
                following.start()
                time.sleep(0.5)  # the follower is reading through Redis
                killed = time.monotonic()
                reader.process.send_signal(signal.SIGKILL)
                following.join(30)
                lost_after = time.monotonic() - killed
                assert not following.is_alive()
                replayed = follow(client, other.url, stream_id, f"{stream_id}.0")  # a resume after the death
        events = payloads(before + got)
        assert events[-1]["error"]["code"] == "stream_lost" and "Ask again" in events[-1]["error"]["message"]
        assert text_of(events) == " ".join(WORDS.split()[:5])  # what the reader had, intact
        assert lost_after < 5, f"the follower learned it after {lost_after:.1f}s"
        assert payloads(replayed)[-1]["error"]["code"] == "stream_lost"
        assert text_of(payloads(replayed)) == text_of(events)
    finally:
        if isinstance(store, RedisServer):
            store.kill()
        else:
            store.kill_all()
        simulator.release("die")


QUOTA = {"authorization": "Bearer key-of-q"}
FIVE = {"message": "echo:" + " ".join("x" * 5)}  # 5 prompt and 5 completion tokens: three spend q's 30


def spend_the_quota(client: httpx.Client, url: str) -> None:
    assert [client.post(url + STREAM, json=FIVE, headers=QUOTA).status_code for _ in range(4)] == [200, 200, 200, 403]


def failures(client: httpx.Client, url: str) -> float:
    return metric(client.get(url + "/metrics", headers=KEY).text, "chatsse_redis_failures_total")


@pytest.mark.parametrize("replicas", [1, 0], ids=["a primary fails over", "a shard is lost"])
def test_cluster_faults_degrade_then_recover_by_themselves(tmp_path: Path, simulator: Simulator, replicas: int) -> None:
    cluster = RedisClusterNodes(tmp_path / "cluster", primaries=3, replicas=replicas, node_timeout=1000)
    cluster.start()
    try:
        with gateways(tmp_path, simulator, cluster.url) as (first, second), httpx.Client(timeout=30) as client:
            spend_the_quota(client, first.url)
            victim = cluster.primary_of("chatsse:{c:q}:open")  # the node that holds the caller's counters
            message = {"message": f"echo:{WORDS}[sim: hold_after=4 hold=fault]"}
            with connect_sse(client, "POST", first.url + STREAM, json=message, headers=KEY) as connected:
                stream_id = connected.response.headers["x-chatsse-stream"]
                events = connected.iter_sse()
                head = [next(events), next(events)]
                cluster.kill(victim)
                during = client.post(second.url + STREAM, json=FIVE, headers=QUOTA).status_code
                resumed = client.get(f"{second.url}{STREAM}/{stream_id}", headers=KEY, timeout=10)
                simulator.release("fault")
                rest = [e for e in events if e.data]
            # The client connected to the reading instance kept its reply, whatever Redis was doing.
            assert text_of(payloads(head + rest)) == WORDS and kinds(payloads(rest))[-1] == "done"
            if replicas:
                # A replica takes over within seconds; redis-py's retries may ride it out. Either way nothing is
                # a server error: the caller is refused as before (403) or let through while Redis is away (200).
                assert during in (200, 403) and resumed.status_code in (200, 503)
                cluster.wait_until_ok()
            else:
                # The cluster is down (a slot no node serves): limits fail open and count it, resumes are 503.
                assert during == 200 and resumed.status_code == 503
                assert resumed.json()["error"]["code"] == "resume_unavailable"
                assert failures(client, second.url) >= 1
                cluster.start_node(victim)  # whole again (empty: nothing persisted), by itself from here
                cluster.wait_until_ok()

            # Everything works again, with nothing restarted on the gateways' side.
            def resumes() -> bool:
                sid, before = start_and_cut(client, first.url, "echo:back again", 1)
                return client.get(f"{second.url}{STREAM}/{sid}", headers=KEY).status_code == 200

            assert wait_until(resumes, timeout=15, interval=0.2)
            if replicas:
                assert client.post(first.url + STREAM, json=FIVE, headers=QUOTA).status_code == 403  # kept
            else:
                spend_the_quota(client, second.url)  # the counters were on the lost node: counting starts over
    finally:
        cluster.kill_all()
        simulator.release("fault")
