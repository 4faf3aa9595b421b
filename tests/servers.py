"""Real servers for tests: a uvicorn server in a thread on a socket pre-bound to 127.0.0.1:0."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp


@dataclass
class RunningServer:
    url: str
    server: uvicorn.Server

    def open_tasks(self) -> int:
        """Connection tasks uvicorn still runs (each is a request that has not finished)."""
        return len(self.server.server_state.tasks)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: ASGIApp) -> Iterator[RunningServer]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.005)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def wait_until(predicate: object, timeout: float = 5.0, interval: float = 0.005) -> bool:
    """Poll `predicate()` until it is true or `timeout` passes (a safety net, not a timing assertion)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def healthy(url: str) -> bool:
    """True when a gateway at `url` answers /health with 200 (for polling a process that is starting)."""
    import httpx

    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any chatsse or Azure OpenAI setting, plus `values`: what a `chatsse`
    subprocess should see, so that nothing set on the machine running the tests leaks into it."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_OPENAI", "CHATSSE_"))}
    return {**env, **values}
