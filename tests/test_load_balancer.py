"""Three `chatsse serve` instances behind a real nginx (round robin, no sticky routing) on one real Redis Cluster,
under load, with clients that cut their connections and resume through nginx on whichever instance it picks. One
instance is SIGKILLed: the other instances' streams finish byte-exact, the dead one's end with `stream_lost`
within 5 s, nothing hangs, and limits stay shared. Then a second one gets SIGTERM: its drain hands Redis
everything a follower needs to finish. `chatsse chat` and chatsse.js show a lost stream as an error, not a hang."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from chatsse.simulator import Simulator
from tests.conftest import API_KEY, DEPLOYMENT
from tests.helpers import STREAM
from tests.nginx import Nginx
from tests.redis_server import RedisClusterNodes
from tests.servers import CHATSSE, GatewayProcess, chatsse_serve, clean_env

# The heaviest tests take the same pytest-xdist worker, one after the other: each wants the machine.
pytestmark = pytest.mark.xdist_group("heavy")

NAMES = ("a", "b", "c")
CALLERS = (
    '[[caller]]\nname = "load"\nkey_env = "LOAD_KEY"\nrequests_per_minute = 40\n\n'
    '[[caller]]\nname = "q"\nkey_env = "Q_KEY"\ntoken_quota = 30\nquota_period = "day"\n\n'
    '[[caller]]\nname = "drain"\nkey_env = "DRAIN_KEY"\nrequests_per_minute = 1000\n\n'
    "[anonymous]\nrequests_per_minute = 1000\n"  # `chatsse chat` sends no key
)
LOAD = {"authorization": "Bearer key-of-load"}
DRAIN = {"authorization": "Bearer key-of-drain"}


@dataclass
class Fleet:
    """Three simulators (one per instance, so the one that answered names the reading instance), three gateways
    named after them, nginx in front, one cluster behind."""

    sims: dict[str, Simulator]
    gateways: dict[str, GatewayProcess]
    nginx: Nginx
    cluster: RedisClusterNodes


def instance(tmp_path: Path, name: str, simulator: Simulator, redis_url: str, drain: float) -> Any:
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[[upstream]]\nname = "sim-{name}"\nendpoint = "{simulator.url}"\ndeployment = "{DEPLOYMENT}"\n'
        f'api_key_env = "SIM_KEY"\n\n{CALLERS}'
    )
    env = {
        "CHATSSE_CONFIG": str(config),
        "SIM_KEY": API_KEY,
        "LOAD_KEY": "key-of-load",
        "Q_KEY": "key-of-q",
        "DRAIN_KEY": "key-of-drain",
        "CHATSSE_REDIS_URL": redis_url,
        "CHATSSE_RESUME_SECONDS": "60",
        "CHATSSE_PING_SECONDS": "0",
        "CHATSSE_DRAIN_SECONDS": str(drain),
        "CHATSSE_TRUSTED_PROXIES": "127.0.0.1",
    }
    return chatsse_serve(tmp_path, None, env=env)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    cluster = RedisClusterNodes(tmp_path / "cluster", primaries=3)
    cluster.start()
    with ExitStack() as stack:
        stack.callback(cluster.kill_all)
        sims = {name: Simulator(api_key=API_KEY, deployment=DEPLOYMENT) for name in NAMES}
        for simulator in sims.values():
            simulator.start_in_thread()
            stack.callback(simulator.stop_thread)
        gateways = {
            name: stack.enter_context(instance(tmp_path, name, sims[name], cluster.url, drain=1.0)) for name in NAMES
        }
        nginx = Nginx(tmp_path / "nginx", [g.port for g in gateways.values()])
        nginx.start()
        stack.callback(nginx.stop)
        yield Fleet(sims, gateways, nginx, cluster)


@dataclass
class Client:
    """One user: POST through nginx, read `cut` events, drop the connection, resume through nginx (any instance) as
    often as it takes, until a final event or the deadline."""

    base: str
    text: str
    cut: int
    delay: float
    key: dict[str, str] = field(default_factory=lambda: LOAD)
    reader: str = ""
    posts: int = 0  # attempts: one an instance admitted and then died on is asked again elsewhere
    events: list[dict[str, Any]] = field(default_factory=list)
    ended_at: float = 0.0
    connections: int = 0
    stream_id: str = ""
    last_id: str = ""

    def run(self, deadline: float) -> None:
        with httpx.Client(timeout=httpx.Timeout(5, read=10)) as http:
            self._post(http)
            while not self.over and time.monotonic() < deadline:
                headers = {**self.key, **({"last-event-id": self.last_id} if self.last_id else {})}
                try:
                    with connect_sse(http, "GET", f"{self.base}{STREAM}/{self.stream_id}", headers=headers) as source:
                        self.connections += 1
                        if source.response.status_code != 200:
                            time.sleep(0.1)  # 503 resume_unavailable while Redis fails over: ask again
                            continue
                        self._read(source, None)
                except httpx.TransportError:
                    time.sleep(0.05)  # the instance it was on died: resume on another
        self.ended_at = time.monotonic()

    def _post(self, http: httpx.Client) -> None:
        body = {"message": f"echo:{self.text}[sim: delay={self.delay}]"}
        for _ in range(10):  # nginx does not retry a POST on a dead instance: the client does
            self.posts += 1
            try:
                with connect_sse(http, "POST", self.base + STREAM, json=body, headers=self.key) as source:
                    if source.response.status_code in (502, 503):
                        time.sleep(0.1)
                        continue
                    assert source.response.status_code == 200, source.response.read()
                    self.reader = source.response.headers["x-chatsse-upstream"].removeprefix("sim-")
                    self.stream_id = source.response.headers["x-chatsse-stream"]
                    self._read(source, self.cut)
                    return
            except httpx.TransportError:
                if self.stream_id:
                    return  # cut by a dying instance after it started: resume
                time.sleep(0.1)
        raise AssertionError("no instance took the chat")

    def _read(self, source: Any, limit: int | None) -> None:
        for event in source.iter_sse():
            if not event.data:
                continue
            self.events.append(json.loads(event.data))
            self.last_id = event.id or self.last_id
            if self.over or (limit is not None and len(self.events) >= limit):
                return

    @property
    def over(self) -> bool:
        return bool(self.events) and ("done" in self.events[-1] or "error" in self.events[-1])

    @property
    def received(self) -> str:
        return "".join(e.get("content", "") for e in self.events)


def run_clients(clients: list[Client], action_at: float, action: Any, deadline: float) -> float:
    """Start the clients over 0.3 s, do `action` `action_at` s in, wait for them all; returns when `action` ran."""
    threads = [threading.Thread(target=c.run, args=(deadline,), daemon=True) for c in clients]
    started = time.monotonic()
    for thread in threads:
        thread.start()
        time.sleep(0.3 / len(threads))
    time.sleep(max(0.0, action_at - (time.monotonic() - started)))
    acted = time.monotonic()
    action()
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic() + 5))
    assert not any(thread.is_alive() for thread in threads), "a stream hung"
    return acted


def text(index: int, words: int) -> str:
    return " ".join(f"c{index}w{n}" for n in range(words))


def test_an_instance_killed_under_load_then_one_drained(fleet: Fleet) -> None:
    rng = random.Random(20)
    base = fleet.nginx.url
    clients = [Client(base, text(i, 40), cut=rng.randint(2, 6), delay=0.05) for i in range(24)]
    victim = fleet.gateways["a"]
    began = time.monotonic()
    killed = run_clients(clients, 0.9, lambda: victim.process.send_signal(signal.SIGKILL), time.monotonic() + 30)
    assert {c.reader for c in clients} == set(NAMES)  # round robin spread them over all three
    for client in clients:
        if client.reader == "a":  # its reader died: every follower learned it, with the text so far intact
            assert client.events[-1]["error"]["code"] == "stream_lost", client.events[-1]
            assert client.text.startswith(client.received)
            assert client.ended_at - killed < 5, f"stream_lost after {client.ended_at - killed:.1f}s"
        else:  # read by a live instance: whole, byte-exact, though followed through nginx on any instance
            assert client.events[-1].get("done") is True, client.events[-1]
            assert client.received == client.text
        assert client.connections >= 1  # every one of them resumed at least once
    # Limits stay shared: at least 24 of the caller's 40 requests a minute were spent, across the three instances
    # (apart, each would still admit all 20 of these). The bucket refills continuously: 40/60 a second since then.
    with httpx.Client(timeout=10) as http:
        statuses = [http.post(base + STREAM, json={"message": "echo:x"}, headers=LOAD).status_code for _ in range(20)]
        refilled = (time.monotonic() - began) * 40 / 60
        attempts = sum(c.posts for c in clients)
        assert 40 - attempts <= statuses.count(200) <= 40 - 24 + refilled + 1 and statuses[-1] == 429, statuses
        five = {"message": "echo:" + " ".join("x" * 5)}
        quota = {"authorization": "Bearer key-of-q"}
        assert [http.post(base + STREAM, json=five, headers=quota).status_code for _ in range(4)] == [
            200,
            200,
            200,
            403,
        ]

    # Now a clean stop: SIGTERM drains "b" (1 s), ending its long replies with server_shutdown. Its followers on
    # "c" finish from what it wrote to Redis before exiting; none is left to time out or to be told stream_lost.
    for simulator in fleet.sims.values():
        simulator.requests.clear()
    late = [Client(base, text(100 + i, 60), cut=3, delay=0.05, key=DRAIN) for i in range(6)]
    drained = fleet.gateways["b"]
    run_clients(late, 0.6, lambda: drained.process.send_signal(signal.SIGTERM), time.monotonic() + 30)
    assert drained.process.wait(15) == 0
    for client in late:
        last = client.events[-1]
        if client.reader == "b":
            assert last.get("error", {}).get("code") == "server_shutdown", last
            assert client.text.startswith(client.received)
        else:
            assert last.get("done") is True and client.received == client.text, last


def test_clients_show_a_lost_stream_as_an_error(fleet: Fleet, tmp_path: Path) -> None:
    # `chatsse chat` through nginx: kill whichever instance reads its reply; it prints the text so far and the
    # error, and exits 1 (the user can ask again), instead of hanging.
    command = [
        CHATSSE,
        "chat",
        "--url",
        fleet.nginx.url,
        "echo:one two three four five six[sim: hold_after=3 hold=cli]",
    ]
    env = clean_env()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as chat:
        assert chat.stdout is not None
        shown = b""
        while b"three" not in shown:
            shown += os.read(chat.stdout.fileno(), 64)  # the text is on screen: its events are on their way to Redis
        time.sleep(0.1)
        fleet.gateways[wait_for_reader(fleet)].process.send_signal(signal.SIGKILL)
        rest, raw_err = chat.communicate(timeout=20)
        out, err = (shown + rest).decode(), raw_err.decode()
    assert chat.returncode == 1 and out.startswith("one two three") and "(stream_lost)" in err, (out, err)
    assert "Ask again" in err
    # chatsse.js, as the page uses it: the generator yields the error event and ends.
    node = shutil.which("node")
    assert node, "node is needed for chatsse.js (CI installs it)"
    script = tmp_path / "lost.mjs"
    static = Path(__file__).parent.parent / "chatsse" / "static" / "chatsse.js"
    script.write_text(
        f'import {{ streamChat }} from "{static}";\n'
        "const events = [];\n"
        f'const body = {{ message: "echo:a b c d e[sim: hold_after=2 hold=js]" }};\n'
        f'for await (const e of streamChat("{fleet.nginx.url}{STREAM}", body)) {{\n'
        '  events.push(e);\n  if (events.length === 2) console.log("started");\n}\n'
        "console.log(JSON.stringify(events));\n"
    )
    with subprocess.Popen([node, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as js:
        assert js.stdout is not None
        assert js.stdout.readline().strip() == "started"
        time.sleep(0.1)
        reader = wait_for_reader(fleet)
        fleet.gateways[reader].process.send_signal(signal.SIGKILL)
        out, err = js.communicate(timeout=20)
    events = json.loads(out.strip().splitlines()[-1])
    assert [e.get("content") for e in events[:2]] == ["a", " b"] and events[-1]["error"]["code"] == "stream_lost", err


def wait_for_reader(fleet: Fleet) -> str:
    """The instance whose simulator holds the newest reply (each instance has its own)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for name, simulator in fleet.sims.items():
            if any(r.finished_at is None and r.peer_closed_at is None for r in simulator.requests):
                return name
        time.sleep(0.02)
    raise AssertionError("no instance is reading a reply")
