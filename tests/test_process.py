"""The gateway as a real process: graceful drain on a real SIGTERM, and trusting a proxy only when told to."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from chatsse.simulator import Simulator
from tests.servers import clean_env, free_port, wait_until

CHATSSE = str(Path(sys.executable).with_name("chatsse"))


@contextmanager
def gateway_process(simulator: Simulator, tmp_path: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    environment = {
        **clean_env(),
        "AZURE_OPENAI_ENDPOINT": simulator.url,
        "AZURE_OPENAI_API_KEY": "k",
        "AZURE_OPENAI_DEPLOYMENT_NAME": "d",
        "CHATSSE_LOG_FORMAT": "json",
        **env,
    }
    command = [CHATSSE, "serve", "--port", str(port)]
    with subprocess.Popen(command, cwd=tmp_path, env=environment, stderr=subprocess.PIPE, text=True) as process:
        url = f"http://127.0.0.1:{port}"
        try:
            assert wait_until(lambda: _up(url), timeout=20, interval=0.05), "gateway did not start"
            yield url, process
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def read_events(url: str, message: str, into: list[dict[str, object]]) -> None:
    with httpx.stream("POST", url + "/api/v1/chat/stream", json={"message": message}, timeout=30) as response:
        buffer = ""
        for text in response.iter_text():
            buffer += text
            *blocks, buffer = buffer.split("\n\n")
            into += [json.loads(b[6:]) for b in blocks if b.startswith("data: ")]


def test_sigterm_drains_open_streams_then_exits_0(tmp_path: Path) -> None:
    simulator = Simulator()
    simulator.start_in_thread()
    try:
        with gateway_process(simulator, tmp_path, CHATSSE_DRAIN_SECONDS="2") as (url, process):
            short: list[dict[str, object]] = []
            long: list[dict[str, object]] = []
            readers = [
                threading.Thread(target=read_events, args=(url, "echo:a b c d e f[sim: delay=0.15]", short)),
                threading.Thread(target=read_events, args=(url, "echo:never ending[sim: hold_after=1]", long)),
            ]
            for reader in readers:
                reader.start()
            assert wait_until(lambda: len(short) >= 1 and len(long) >= 1)

            process.send_signal(signal.SIGTERM)
            assert wait_until(lambda: httpx.get(url + "/health").status_code == 503)
            assert httpx.get(url + "/health").json()["status"] == "draining"
            refused = httpx.post(url + "/api/v1/chat/stream", json={"message": "echo:new"})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"

            for reader in readers:
                reader.join(15)
            assert process.wait(15) == 0
            _, stderr = process.communicate()
        # The short stream finished normally during the drain; the long one got a final server_shutdown event.
        assert "".join(str(e.get("content", "")) for e in short) == "a b c d e f" and short[-1].get("done") is True
        assert long[0] == {"content": "never"} and long[-1]["error"]["code"] == "server_shutdown"  # type: ignore[index]
        assert not any("done" in e for e in long)
        assert "Traceback" not in stderr
        assert len(simulator.requests) == 2  # the refused request never reached the upstream
    finally:
        simulator.stop_thread()


def test_forwarded_address_is_trusted_only_when_configured(tmp_path: Path) -> None:
    simulator = Simulator()
    simulator.start_in_thread()
    body = {"message": "echo:x"}
    try:
        for trusted, expected in (("", [200, 429]), ("127.0.0.1", [200, 200])):
            with gateway_process(
                simulator, tmp_path, CHATSSE_RATE_LIMIT="1/minute", CHATSSE_TRUSTED_PROXIES=trusted
            ) as (
                url,
                process,
            ):
                statuses = [
                    httpx.post(url + "/api/v1/chat/stream", json=body, headers={"x-forwarded-for": ip}).status_code
                    for ip in ("203.0.113.7", "203.0.113.8")
                ]
                process.send_signal(signal.SIGINT)
                _, stderr = process.communicate(timeout=10)
            assert statuses == expected, trusted
            lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
            callers = [line["caller"] for line in lines if line["route"] == "/api/v1/chat/stream"]
            assert callers == (["ip:127.0.0.1"] * 2 if not trusted else ["ip:203.0.113.7", "ip:203.0.113.8"])
    finally:
        simulator.stop_thread()


def test_sigterm_ends_detached_streams_with_the_rest(tmp_path: Path) -> None:
    simulator = Simulator()
    simulator.start_in_thread()
    try:
        env = {"CHATSSE_DRAIN_SECONDS": "1", "CHATSSE_RESUME_SECONDS": "60"}
        with gateway_process(simulator, tmp_path, **env) as (url, process):
            with httpx.stream(
                "POST", url + "/api/v1/chat/stream", json={"message": "echo:a b[sim: hold_after=1]"}
            ) as r:
                next(r.iter_bytes())  # the first event, then this client leaves: the reply goes on, detached
            upstream = simulator.requests[-1]
            assert not wait_until(lambda: upstream.peer_closed_at is not None, timeout=0.5)  # still read, for nobody
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0
        assert upstream.peer_closed_at is not None  # drain ended it and closed its upstream
    finally:
        simulator.stop_thread()
