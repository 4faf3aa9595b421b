"""Fixtures: the simulator as the upstream, and gateways built with their own settings, all on 127.0.0.1."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from chatsse.app import create_app
from chatsse.settings import Settings
from chatsse.simulator import Simulator
from chatsse.upstreams import UpstreamConfig
from tests.redis_server import RedisServer
from tests.servers import API_KEY, DEPLOYMENT, Fleet, RunningServer, serve_in_thread

__all__ = ["API_KEY", "DEPLOYMENT", "GatewayFactory"]


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
