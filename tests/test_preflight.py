"""Starting to serve: settings are checked once, however chatsse is started and however many workers it runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from chatsse.simulator import Simulator
from tests.redis_server import RedisServer
from tests.servers import chatsse_serve


def pings(server: RedisServer) -> int:
    client = redis.Redis(port=server.port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_chatsse_serve_checks_redis_once(
    simulator: Simulator, redis_server: RedisServer, tmp_path: Path, workers: str
) -> None:
    client = redis.Redis(port=redis_server.port)
    client.config_resetstat()  # the fixture's own readiness pings
    client.close()
    with chatsse_serve(tmp_path, simulator.url, "--workers", workers, env={"CHATSSE_REDIS_URL": redis_server.url}):
        assert pings(redis_server) == 1  # the preflight's, in the process that starts the workers; none in them
