"""Real servers for tests: a uvicorn server in a thread on a socket pre-bound to 127.0.0.1:0, and `chatsse serve`
as a process of its own."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from chatsse.app import create_app
from chatsse.settings import Settings
from chatsse.simulator import Simulator
from chatsse.upstreams import UpstreamConfig

CHATSSE = str(Path(sys.executable).with_name("chatsse"))  # the console script of the package under test
API_KEY = "sk-test-SECRET-4f9a1c7e2b"
DEPLOYMENT = "gpt-test"
FLEET_KEY = "sk-upstream-SECRET-7a1b"


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
    config = uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=1, ws="none")
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
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any chatsse or Azure OpenAI setting, plus `values`: what a `chatsse`
    subprocess should see, so that nothing set on the machine running the tests leaks into it. Warnings are errors
    there too, as in the tests' own process (a deprecated call in a dependency fails the test that reaches it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_OPENAI", "CHATSSE_"))}
    return {**env, "PYTHONWARNINGS": "error", **values}


@dataclass
class GatewayProcess:
    """A running `chatsse serve`; `stop()` ends it (SIGINT, killed if it hangs) and returns what it wrote to stderr.
    Its stderr is read as it is written: a pipe left unread fills (64 KiB of log lines), and a gateway whose next
    log line cannot be written stops serving everyone (a test's hang, not the gateway's)."""

    url: str
    process: subprocess.Popen[str]
    stderr: str = ""

    def __post_init__(self) -> None:
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None
        if self.process.stderr is not None:
            self._reader = threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True)
            self._reader.start()

    def _drain(self, pipe: Any) -> None:
        for line in pipe:
            self._lines.append(line)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        killed = ""
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            # It did not stop: kill it with its workers (its own session), which would hold stderr open forever.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)
            killed = "\n[killed: chatsse serve did not stop within 20 s]"
        if self._reader is not None:
            self._reader.join(20)
            self.process.stderr.close()  # type: ignore[union-attr]
            self._reader = None
        self.stderr = "".join(self._lines) + killed
        return self.stderr


@contextmanager
def chatsse_serve(
    cwd: Path,
    upstream: str | None,
    *args: str,
    env: dict[str, str] | None = None,
    file_limit: int | None = None,
    capture_stderr: bool = True,
) -> Iterator[GatewayProcess]:
    """`chatsse serve` on a free port, in `cwd`, with the simulator at `upstream` as its Azure OpenAI (None: no Azure
    settings at all), `args` on its command line and `env` in its environment; yielded once /health answers 200,
    stopped at the end. `file_limit` lowers its soft limit of open files."""
    port = free_port()
    # No shedding unless `env` asks for it: these gateways share a busy 2-core machine with the suite, where a loop
    # that waits for a core waits for the machine's sake, not its own (as in conftest's `settings`).
    environment = clean_env(CHATSSE_LOG_FORMAT="json", CHATSSE_MAX_LOOP_LAG_MS="0", CHATSSE_MAX_CPU_PERCENT="0")
    if upstream is not None:
        environment.update(
            AZURE_OPENAI_ENDPOINT=upstream, AZURE_OPENAI_API_KEY=API_KEY, AZURE_OPENAI_DEPLOYMENT_NAME=DEPLOYMENT
        )
    environment.update(env or {})

    def limit_files() -> None:
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (file_limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    process = subprocess.Popen(
        [CHATSSE, "serve", "--port", str(port), *args],
        cwd=cwd,
        env=environment,
        stderr=subprocess.PIPE if capture_stderr else subprocess.DEVNULL,
        text=True,
        preexec_fn=limit_files if file_limit is not None else None,
        start_new_session=True,  # its workers with it, for stop()
    )
    gateway = GatewayProcess(f"http://127.0.0.1:{port}", process)
    try:
        assert wait_until(lambda: healthy(gateway.url), timeout=30, interval=0.05), "chatsse serve did not start"
        yield gateway
    finally:
        gateway.stop()


class Fleet:
    """Simulators by name, and gateways in front of them configured with one upstream each (the `fleet` fixture)."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.sims: dict[str, Simulator] = {}

    def sim(self, name: str, **options: Any) -> Simulator:
        simulator = Simulator(**{"api_key": FLEET_KEY, "deployment": f"dep-{name}", **options})
        simulator.start_in_thread()
        self.stack.callback(simulator.stop_thread)
        self.sims[name] = simulator
        return simulator

    def upstream(self, name: str, **fields: Any) -> UpstreamConfig:
        endpoint = self.sims[name].url + ("/v1" if fields.get("api") == "openai" else "")
        return UpstreamConfig(name=name, endpoint=endpoint, deployment=f"dep-{name}", api_key=FLEET_KEY, **fields)

    def gateway(self, *upstreams: UpstreamConfig, **settings: Any) -> RunningServer:
        options: dict[str, Any] = {"ping_seconds": 0, "upstream_timeout": 10, "max_retry_wait": 5}
        options.update(max_loop_lag_ms=0, max_cpu_percent=0)  # no shedding, as in conftest's `settings`
        options.update(settings)
        app = create_app(Settings(upstreams=upstreams, **options))
        return self.stack.enter_context(serve_in_thread(app))

    def counts(self) -> dict[str, int]:
        return {name: len(sim.requests) for name, sim in self.sims.items()}
