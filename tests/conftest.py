"""Fixtures: the simulator as the upstream, and gateways built with their own settings, all on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from chatsse.app import create_app
from chatsse.settings import Settings
from chatsse.simulator import Simulator
from chatsse.upstreams import UpstreamConfig
from tests.redis_server import RedisServer
from tests.servers import API_KEY, DEPLOYMENT, Fleet, RunningServer, serve_in_thread

__all__ = ["API_KEY", "DEPLOYMENT", "NODE", "GatewayFactory"]

NODE = (
    Path(__file__).parent / "node"
)  # what the tests run with node: the AI SDK, npm openai, Codex CLI, axe-core, jsdom
NODE_PACKAGES = ("ai", "openai", "@ai-sdk/openai", "zod", "@openai/codex", "esbuild", "axe-core", "jsdom")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    sim = Simulator(api_key=API_KEY, deployment=DEPLOYMENT)
    sim.start_in_thread()
    yield sim
    sim.stop_thread()


@pytest.fixture
def settings(simulator: Simulator) -> Settings:
    return Settings(
        upstreams=(UpstreamConfig(name="sim", endpoint=simulator.url, api_key=API_KEY, deployment=DEPLOYMENT),),
        upstream_timeout=10,
        max_retry_wait=5,
        ping_seconds=0,
        # No shedding: these gateways share a busy 2-core machine with the suite, where a starved loop is the
        # machine's, not theirs. Shedding has its own tests, on `chatsse serve` with its defaults.
        max_loop_lag_ms=0,
        max_cpu_percent=0,
    )


GatewayFactory = Callable[..., RunningServer]


@pytest.fixture
def make_gateway(settings: Settings) -> Iterator[GatewayFactory]:
    """Start a gateway whose settings are the defaults here with `overrides` applied; overrides named like an
    UpstreamConfig field (api_key, endpoint, deployment, api_version, ...) change the one upstream."""
    upstream_fields = {field.name for field in dataclasses.fields(UpstreamConfig)}
    with ExitStack() as stack:

        def start(**overrides: Any) -> RunningServer:
            upstream = {k: overrides.pop(k) for k in list(overrides) if k in upstream_fields}
            if upstream:
                overrides["upstreams"] = (dataclasses.replace(settings.upstreams[0], **upstream),)
            app = create_app(dataclasses.replace(settings, **overrides))
            return stack.enter_context(serve_in_thread(app))

        yield start


@pytest.fixture
def gateway(make_gateway: GatewayFactory) -> RunningServer:
    return make_gateway()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with ExitStack() as stack:
        yield Fleet(stack)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/node's packages, installed from its package-lock.json when any is missing (by one pytest-xdist worker
    at a time: the others wait on the lock, then find them there)."""
    with open(NODE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all((NODE / "node_modules" / package).is_dir() for package in NODE_PACKAGES):
            command = ["npm", "ci", "--no-audit", "--no-fund"]
            subprocess.run(command, cwd=NODE, check=True, capture_output=True, timeout=300)
    return NODE / "node_modules"


CHROMIUM = os.environ.get("CHATSSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright (its own browser download is not reachable here). Per module: Playwright's
    sync API holds an event loop while it runs, which the async tests of other modules could not start beside."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium, or deselect with -m 'not browser'")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
