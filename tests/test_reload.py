"""Running without restarts (#33): the configuration file reloaded live (SIGHUP to a real `chatsse serve`, or a
change of its content), checked first; keys that expire and their successors; `chatsse keys rotate`."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chatsse.callers.keys import key_sha256
from chatsse.settings import Settings
from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM, metric
from tests.servers import API_KEY, CHATSSE, DEPLOYMENT, chatsse_serve, wait_until


def upstream(url: str, name: str = "sim") -> str:
    return (
        f'[[upstream]]\nname = "{name}"\nendpoint = "{url}"\ndeployment = "{DEPLOYMENT}"\napi_key_env = "SIM_KEY"\n\n'
    )


def caller(name: str, key: str, extra: str = "") -> str:
    return f'[[caller]]\nname = "{name}"\nkey_sha256 = "{key_sha256(key)}"\n{extra}\n'


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def status(url: str, key: str, message: str = "echo:hello") -> int:
    return httpx.post(url + STREAM, json={"message": message}, headers=auth(key), timeout=30).status_code


def reloads(url: str, key: str, result: str) -> float:
    text = httpx.get(url + "/metrics", headers=auth(key)).text
    series = f'chatsse_config_reloads_total{{result="{result}"}}'
    return metric(text, series) if series in text else 0.0


def test_a_changed_file_is_reloaded_without_a_signal_and_a_bad_one_changes_nothing(
    tmp_path: Path,
    simulator: Simulator,
    make_gateway: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIM_KEY", API_KEY)  # a reload reads the variables the file names from the environment
    path = tmp_path / "chatsse.toml"
    path.write_text(upstream(simulator.url) + caller("a", "key-a") + caller("b", "key-b", "models = []"))
    settings = Settings.from_env({"CHATSSE_CONFIG": str(path), "SIM_KEY": API_KEY}, env_file=None)
    gateway = make_gateway(
        upstreams=settings.upstreams, callers=settings.callers, config_path=str(path), config_check_seconds=0.2
    )
    assert status(gateway.url, "key-a") == 200 and status(gateway.url, "key-c") == 401
    assert status(gateway.url, "key-b") == 403  # no model allowed

    # A new caller, a removed one, a changed limit: the file rewritten, as a ConfigMap update does.
    path.write_text(upstream(simulator.url) + caller("b", "key-b") + caller("c", "key-c", "requests_per_minute = 1"))
    assert wait_until(lambda: status(gateway.url, "key-c") == 200, timeout=10)
    assert status(gateway.url, "key-c") == 429  # its limit came with it
    assert status(gateway.url, "key-a") == 401 and status(gateway.url, "key-b") == 200
    assert reloads(gateway.url, "key-b", "applied") == 1

    caplog.set_level(logging.ERROR, logger="chatsse")
    path.write_text(upstream(simulator.url) + caller("b", "key-b", "max_streams = -1") + "[[nonsense]]\n")
    assert wait_until(lambda: reloads(gateway.url, "key-b", "invalid") == 1, timeout=10)
    problems = [r.getMessage() for r in caplog.records if "configuration not reloaded" in r.getMessage()]
    assert any("max_streams = -1 is not valid" in p for p in problems), problems
    assert any("unknown top-level key(s) nonsense" in p for p in problems), problems
    assert status(gateway.url, "key-b") == 200 and status(gateway.url, "key-a") == 401  # what ran stays
    assert reloads(gateway.url, "key-b", "applied") == 1

    # A valid change elsewhere: a caller that stays keeps its counters (c spent its one request this minute).
    path.write_text(
        upstream(simulator.url)
        + caller("b", "key-b", "max_streams = 3")
        + caller("c", "key-c", "requests_per_minute = 1")
    )
    assert wait_until(lambda: reloads(gateway.url, "key-b", "applied") == 2, timeout=10)
    assert status(gateway.url, "key-c") == 429


def test_sighup_with_50_streams_open_ends_each_byte_exact_and_swaps_the_callers(
    tmp_path: Path, simulator: Simulator
) -> None:
    path = tmp_path / "chatsse.toml"
    path.write_text(upstream(simulator.url) + caller("a", "key-a"))
    env = {"CHATSSE_CONFIG": str(path), "SIM_KEY": API_KEY, "CHATSSE_CONFIG_CHECK_SECONDS": "0"}  # the signal only
    with chatsse_serve(tmp_path, None, env=env) as gateway:
        words = " ".join(f"w{i}" for i in range(12))
        message = {"message": f"echo:{words}[sim: delay=0.1]"}
        bodies: list[bytes] = [b""] * 50
        expected = httpx.post(gateway.url + STREAM, json=message, headers=auth("key-a"), timeout=30).content

        def read(index: int) -> None:
            with httpx.stream("POST", gateway.url + STREAM, json=message, headers=auth("key-a"), timeout=60) as reply:
                bodies[index] = b"".join(reply.iter_bytes())

        readers = [threading.Thread(target=read, args=(n,)) for n in range(50)]
        for reader in readers:
            reader.start()
        assert wait_until(lambda: len(simulator.requests) >= 51, timeout=20)

        path.write_text(upstream(simulator.url) + caller("c", "key-c"))
        gateway.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: status(gateway.url, "key-c") == 200, timeout=10)
        assert status(gateway.url, "key-a") == 401  # its key was removed
        for reader in readers:
            reader.join(60)
        assert all(body == expected for body in bodies), [b for b in bodies if b != expected][:1]
        assert reloads(gateway.url, "key-c", "applied") == 1
    before_exit = gateway.stderr.split("Shutting down")[0]  # what Ctrl+C (the stop) prints is uvicorn's
    assert "configuration reloaded (SIGHUP): 1 upstreams, 1 callers" in before_exit
    assert "Traceback" not in before_exit


def test_chatsse_reload_signals_every_worker(tmp_path: Path, simulator: Simulator) -> None:
    path = tmp_path / "chatsse.toml"
    path.write_text(upstream(simulator.url) + caller("a", "key-a"))
    env = {"CHATSSE_CONFIG": str(path), "SIM_KEY": API_KEY, "CHATSSE_CONFIG_CHECK_SECONDS": "0"}
    with chatsse_serve(tmp_path, None, "--workers", "2", env=env) as gateway:
        path.write_text(upstream(simulator.url) + caller("a", "key-a2"))
        done = subprocess.run(
            [CHATSSE, "reload", "--pid", str(gateway.process.pid)], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0 and f"asked {gateway.process.pid}" in done.stdout
        # Each request on a new connection: the kernel spreads them over both workers; every one has the new key.
        assert wait_until(lambda: all(status(gateway.url, "key-a2") == 200 for _ in range(12)), timeout=15)
        assert all(status(gateway.url, "key-a") == 401 for _ in range(12))
        assert gateway.process.poll() is None  # reloaded, not restarted


def test_an_expired_key_gets_401_key_expired_while_its_successor_works(
    tmp_path: Path, simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    path = tmp_path / "chatsse.toml"
    path.write_text(
        upstream(simulator.url)
        + '[[caller]]\nname = "partner"\n'
        + f'key_sha256 = [{{sha256 = "{key_sha256("old-key")}", expires = 2020-01-01T00:00:00Z}}, '
        + f'{{sha256 = "{key_sha256("soon-key")}", expires = "2999-01-01T00:00:00+01:00"}}]\n'
        + 'key_env = ["NEW_KEY"]\n'
    )
    settings = Settings.from_env({"CHATSSE_CONFIG": str(path), "SIM_KEY": API_KEY, "NEW_KEY": "new-key"}, env_file=None)
    gateway = make_gateway(upstreams=settings.upstreams, callers=settings.callers)
    expired = httpx.post(gateway.url + STREAM, json={"message": "echo:hi"}, headers=auth("old-key"))
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "key_expired"
    assert status(gateway.url, "new-key") == 200 and status(gateway.url, "soon-key") == 200
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key="old-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "echo:hi"}])
    assert refused.value.code == "key_expired"
    usage = httpx.get(gateway.url + "/api/v1/usage", headers=auth("new-key")).json()
    assert usage["caller"] == "partner"
    sdk.close()  # its pooled connection, not left to the collector (ResourceWarning)


def test_keys_rotate_prints_a_new_key_beside_the_old_one_which_expires(tmp_path: Path, simulator: Simulator) -> None:
    path = tmp_path / "chatsse.toml"
    path.write_text(upstream(simulator.url) + '[[caller]]\nname = "partner"\nkey_env = "PARTNER_KEY"\n')
    env = {**os.environ, "CHATSSE_CONFIG": str(path), "PARTNER_KEY": "the-old-key"}
    printed = subprocess.run(
        [CHATSSE, "keys", "rotate", "partner", "--days", "2"], env=env, capture_output=True, text=True, timeout=30
    )
    assert printed.returncode == 0, printed.stderr
    new_key = printed.stdout.splitlines()[0]
    line = next(line for line in printed.stdout.splitlines() if line.startswith("key_sha256 = "))
    entries = tomllib.loads(line)["key_sha256"]
    assert entries[0]["sha256"] == key_sha256("the-old-key") and entries[1] == key_sha256(new_key)
    assert abs(entries[0]["expires"].timestamp() - (time.time() + 2 * 86400)) < 60
    # The printed line, put in place of the old one: both keys work until the old one's expiry.
    path.write_text(upstream(simulator.url) + f'[[caller]]\nname = "partner"\n{line}\n')
    settings = Settings.from_env({"CHATSSE_CONFIG": str(path), "SIM_KEY": API_KEY}, env_file=None)
    [partner] = settings.callers.callers
    assert [k.sha256 for k in partner.keys] == [key_sha256("the-old-key"), key_sha256(new_key)]
    missing = subprocess.run([CHATSSE, "keys", "rotate", "nobody"], env=env, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "no [[caller]] named 'nobody'" in missing.stderr


def test_probes_need_no_key_and_show_no_secret(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(api_keys=("probe-secret-key",))
    for path in ("/health/live", "/health/ready"):
        answer = httpx.get(gateway.url + path)
        assert answer.status_code == 200 and "probe-secret-key" not in answer.text and API_KEY not in answer.text
    body: dict[str, Any] = json.loads(httpx.get(gateway.url + "/health/ready").text)
    assert body["status"] == "ready" and body["checks"]["started"] is True


def test_a_removed_upstream_takes_no_new_request_and_one_that_stays_keeps_serving(
    tmp_path: Path, simulator: Simulator, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_KEY", API_KEY)
    other = Simulator(api_key=API_KEY, deployment=DEPLOYMENT)
    other.start_in_thread()
    try:
        path = tmp_path / "chatsse.toml"
        path.write_text(upstream(simulator.url, "one") + upstream(other.url, "two"))
        settings = Settings.from_env({"CHATSSE_CONFIG": str(path), "SIM_KEY": API_KEY}, env_file=None)
        gateway = make_gateway(upstreams=settings.upstreams, config_path=str(path), config_check_seconds=0.2)
        served = {httpx.post(gateway.url + STREAM, json={"message": "echo:x"}).headers["x-chatsse-upstream"]}
        while len(served) < 2:  # equal weights: both serve
            served.add(httpx.post(gateway.url + STREAM, json={"message": "echo:x"}).headers["x-chatsse-upstream"])
        path.write_text(upstream(other.url, "two"))
        assert wait_until(lambda: reloads(gateway.url, "-", "applied") == 1, timeout=10)
        before = len(simulator.requests)
        names = {httpx.post(gateway.url + STREAM, json={"message": "echo:x"}).headers["x-chatsse-upstream"]}
        names |= {httpx.post(gateway.url + STREAM, json={"message": "echo:x"}).headers["x-chatsse-upstream"]}
        assert names == {"two"} and len(simulator.requests) == before
    finally:
        other.stop_thread()
