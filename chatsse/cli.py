"""The `chatsse` command: `chatsse serve [--demo]` runs the gateway under uvicorn; `chatsse chat` talks to one;
the operators' commands (`keys new|rotate`, `reload`, `usage`) are in operate.py."""

from __future__ import annotations

import argparse
import contextlib
import copy
import ipaddress
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors.multiprocess import Multiprocess

from chatsse import __version__, operate, terminal
from chatsse.app import serving_app
from chatsse.callers.keys import OVERLAP_DAYS, new_key
from chatsse.callers.report import REPORT_PERIODS
from chatsse.preflight import CHECKED_MARK, ready_settings
from chatsse.server.lifecycle import hand_over
from chatsse.server.protocol import GuardedHttpProtocol
from chatsse.simulator import Simulator

DEMO_DELAY_SECONDS = 0.03


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chatsse", description="Streaming chat gateway for Azure OpenAI.")
    parser.add_argument("--version", action="version", version=f"chatsse {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the gateway", description="Run the gateway with uvicorn.")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=_env_int("PORT", 8000), help="port (default $PORT or 8000)")
    serve.add_argument(
        "--workers", type=int, default=_env_int("WEB_CONCURRENCY", 1), help="processes (default $WEB_CONCURRENCY or 1)"
    )
    serve.add_argument("--demo", action="store_true", help="answer from the built-in simulator instead of Azure")
    chat = commands.add_parser(
        "chat",
        help="chat with a running gateway from the terminal",
        description="Stream a reply to stdout. With no message: read stdin, or chat interactively at a terminal.",
    )
    chat.add_argument("message", nargs="?", help="the message ('-' reads stdin)")
    chat.add_argument(
        "--url",
        default=os.environ.get("CHATSSE_URL", "http://127.0.0.1:8000"),
        help="the gateway (default $CHATSSE_URL or http://127.0.0.1:8000)",
    )
    keys = commands.add_parser("keys", help="make caller keys", description="Make caller keys for [[caller]] tables.")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    new = key_commands.add_parser("new", help="print a new random key once, and the [[caller]] table that admits it")
    new.add_argument("name", help="the caller's name (in logs, metrics and /api/v1/usage)")
    rotate = key_commands.add_parser(
        "rotate", help="print a new key for a caller of $CHATSSE_CONFIG, and the key line where old and new overlap"
    )
    rotate.add_argument("name", help="the [[caller]]'s name")
    rotate.add_argument("--days", type=float, default=OVERLAP_DAYS, help="how long the old key goes on working")
    usage = commands.add_parser(
        "usage",
        help="print every caller's and team's spend in this period",
        description="Print a running gateway's spend report (GET /api/v1/admin/usage) as a table. The admin key is "
        "read from $CHATSSE_ADMIN_KEY.",
    )
    usage.add_argument("--period", choices=REPORT_PERIODS, default="month", help="the current day, week or month")
    usage.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    usage.add_argument("--url", default=os.environ.get("CHATSSE_URL", "http://127.0.0.1:8000"), help="the gateway")
    reload = commands.add_parser(
        "reload",
        help="reload the CHATSSE_CONFIG file of running gateways (SIGHUP)",
        description="Send SIGHUP to every `chatsse serve` on this machine (or to --pid), which reloads its "
        "CHATSSE_CONFIG file in every worker; an invalid file keeps the running configuration (see its log).",
    )
    reload.add_argument("--pid", type=int, help="only this process")
    args = parser.parse_args(argv)
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C: uvicorn has shut down; no traceback for it
            _serve(args.host, args.port, args.workers, args.demo)
    elif args.command == "chat":
        raise SystemExit(terminal.run(args.url, args.message))
    elif args.command == "keys" and args.keys_command == "new":
        print(new_key(args.name), end="")
    elif args.command == "keys":
        raise SystemExit(operate.rotate(args.name, args.days))
    elif args.command == "reload":
        raise SystemExit(operate.reload(args.pid))
    elif args.command == "usage":
        raise SystemExit(operate.usage(args.url, args.period, args.csv, os.environ.get("CHATSSE_ADMIN_KEY", "")))


def _serve(host: str, port: int, workers: int, demo: bool) -> None:
    if demo:
        simulator_url = Simulator(delay=DEMO_DELAY_SECONDS).start_in_thread()
        # Through the environment, so every uvicorn worker process builds the same settings.
        os.environ.update(
            AZURE_OPENAI_ENDPOINT=simulator_url,
            AZURE_OPENAI_API_KEY="demo-key-not-secret",
            AZURE_OPENAI_DEPLOYMENT_NAME="demo",
        )
        print(
            f"chatsse: DEMO MODE. Replies are SIMULATED by the built-in simulator at {simulator_url}; "
            "no Azure OpenAI calls are made.",
            file=sys.stderr,
            flush=True,
        )
    settings = ready_settings()
    print(
        f"chatsse: try  curl -N http://{_display(host)}:{port}/api/v1/chat/stream "
        "-H 'Content-Type: application/json' -d '{\"message\": \"Hello\"}'",
        file=sys.stderr,
        flush=True,
    )
    if not demo and _reachable_beyond_loopback(host) and not settings.api_keys and not settings.rate_limit:
        print(
            f"chatsse: WARNING: listening on {host or 'every address'} with neither CHATSSE_API_KEYS nor "
            "CHATSSE_RATE_LIMIT: anyone who finds this URL can spend your Azure OpenAI quota (CORS does not stop curl)",
            file=sys.stderr,
            flush=True,
        )
    trusted = settings.trusted_proxies
    if workers > 1:
        # Each worker process builds its own app from the environment (uvicorn needs an import string for them);
        # the checks were made here, once.
        os.environ[CHECKED_MARK] = "1"
        os.environ["WEB_CONCURRENCY"] = str(workers)  # and how many share the listening socket (protocol.py)
    with _metrics_shared_by(workers):
        options: dict[str, Any] = dict(
            factory=workers > 1,
            host=host,
            port=port,
            workers=workers,
            log_config=_log_config(),
            access_log=False,  # chatsse logs each request itself, without query strings (which may hold a key)
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted or None,
            # A backstop behind chatsse's own drain (CHATSSE_DRAIN_SECONDS), which ends streams itself.
            timeout_graceful_shutdown=int(settings.drain_seconds) + 10,
            http=GuardedHttpProtocol,  # uvicorn's httptools protocol, with a header deadline and a connection cap
            ws="none",  # no WebSocket route: nothing of a WebSocket library is loaded (or warns)
        )
        if workers > 1:  # uvicorn's workers: each one's drain ends by calling uvicorn's own SIGTERM handler
            config = uvicorn.Config("chatsse.app:factory", **options)
            WorkersReloading(config, sockets=[config.bind_socket()]).run()
        else:  # one process: its server is handed to the drain, which asks it to exit (and the process exits 0)
            DrainingServer(uvicorn.Config(serving_app(settings), **options)).run()


class WorkersReloading(Multiprocess):
    """uvicorn's worker processes, save that SIGHUP reloads the configuration in each of them (uvicorn's own
    restarts every worker, cutting their streams): the master passes the signal on."""

    def handle_hup(self) -> None:
        for worker in self.processes:
            if worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGHUP)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, handed to the drain of the app it runs, which asks it to exit once the streams are done."""

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        hand_over(self)
        super().run(sockets)


@contextlib.contextmanager
def _metrics_shared_by(workers: int) -> Iterator[None]:
    """With several workers, prometheus-client's multiprocess mode: a fresh directory for their values, removed at
    the end, so /metrics reports all workers together whichever one answers."""
    if workers <= 1:
        yield
        return
    directory = tempfile.mkdtemp(prefix="chatsse-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # the workers inherit it
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _log_config() -> dict[str, Any]:
    # uvicorn's own logging setup, plus our logger on the same handler and format.
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["chatsse"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    # The per-request line is already formatted (JSON or key=value): print it bare, one per line.
    config["formatters"]["bare"] = {"format": "%(message)s"}
    config["handlers"]["requests"] = {
        "formatter": "bare",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["chatsse.access"] = {"handlers": ["requests"], "level": "INFO", "propagate": False}
    return config


def _reachable_beyond_loopback(host: str) -> bool:
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return True  # a host name: it may resolve to anything


def _display(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        print(f"chatsse: {name}={raw!r} is not a whole number; using {default}.", file=sys.stderr)
        return default


if __name__ == "__main__":
    main()
