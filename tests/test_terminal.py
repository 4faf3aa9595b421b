"""`chatsse chat`, the real console script as a subprocess against a live gateway and the simulator."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time

from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.cutting_proxy import cutting_proxy
from tests.servers import CHATSSE, RunningServer, free_port, wait_until


def chat(gateway: RunningServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATSSE, "chat", "--url", gateway.url, *args], input=stdin, capture_output=True, text=True, timeout=30
    )


def test_prints_the_reply_as_it_streams_and_exits_0(gateway: RunningServer) -> None:
    command = [CHATSSE, "chat", "--url", gateway.url, "echo:tick tock tick tock[sim: delay=0.3]"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None
        first = os.read(process.stdout.fileno(), 100)
        assert first.startswith(b"tick") and process.poll() is None  # printed while the reply still streams
        rest, stderr = process.communicate(timeout=30)
    assert (first + rest).decode() == "tick tock tick tock\n"
    assert process.returncode == 0 and stderr == b""


def test_stdin_is_the_message(gateway: RunningServer, simulator: Simulator) -> None:
    for args in ((), ("-",)):
        result = chat(gateway, *args, stdin="echo:from stdin")
        assert (result.returncode, result.stdout) == (0, "from stdin\n")
    assert simulator.requests[-1].json["messages"] == [{"role": "user", "content": "echo:from stdin"}]


def test_errors_exit_non_zero_with_the_message(gateway: RunningServer) -> None:
    refused = chat(gateway, "hi [sim: status=400]")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "content filter" in refused.stderr and "content_filter" in refused.stderr

    broken = chat(gateway, "echo:one two three[sim: cut_after=2]")
    assert broken.returncode == 1 and broken.stdout.startswith("one two")
    assert "upstream_disconnected" in broken.stderr

    nowhere = subprocess.run(
        [CHATSSE, "chat", "--url", f"http://127.0.0.1:{free_port()}", "hi"], capture_output=True, text=True, timeout=30
    )
    assert nowhere.returncode == 1 and "cannot reach" in nowhere.stderr
    for result in (refused, broken, nowhere):
        assert "Traceback" not in result.stderr


def test_ctrl_c_stops_cleanly_and_the_server_cancels_the_upstream(gateway: RunningServer, simulator: Simulator) -> None:
    command = [CHATSSE, "chat", "--url", gateway.url, "echo:wait for it[sim: hold_after=1 hold=cli]"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        assert process.stdout.read(4) == "wait"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 130
    assert "stopped" in stderr and "Traceback" not in stderr
    assert wait_until(lambda: simulator.requests[-1].peer_closed_at is not None)


def test_ctrl_c_stops_a_kept_reply_at_the_gateway(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(resume_seconds=30)  # hanging up alone would leave the reply read for 30 s
    command = [CHATSSE, "chat", "--url", gateway.url, "echo:wait for it[sim: hold_after=1 hold=cli-kept]"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        assert process.stdout.read(4) == "wait"
        process.send_signal(signal.SIGINT)
        stopped_at = time.monotonic()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 130 and "Traceback" not in stderr
    upstream = simulator.requests[-1]
    assert wait_until(lambda: upstream.peer_closed_at is not None, timeout=5)
    assert upstream.peer_closed_at is not None and upstream.peer_closed_at - stopped_at < 1.0


def test_interactive_loop_keeps_the_conversation(gateway: RunningServer, simulator: Simulator) -> None:
    controller, terminal = pty.openpty()
    command = [CHATSSE, "chat", "--url", gateway.url]
    with subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal) as process:
        os.close(terminal)
        screen = b""

        def read_until(marker: bytes) -> None:
            nonlocal screen
            deadline = time.monotonic() + 15
            while marker not in screen and time.monotonic() < deadline:
                if select.select([controller], [], [], 0.5)[0]:
                    screen += os.read(controller, 4096)
            assert marker in screen, screen

        read_until(b"you> ")
        os.write(controller, b"echo:first answer\n")
        read_until(b"first answer\r\nyou> ")  # the reply, then the next prompt (not just the echoed input)
        os.write(controller, b"echo:second\n")
        read_until(b"second\r\nyou> ")
        os.write(controller, b"exit\n")
        assert process.wait(10) == 0
        os.close(controller)
    assert simulator.requests[-1].json["messages"] == [
        {"role": "user", "content": "echo:first answer"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "echo:second"},
    ]


def test_a_dropped_connection_is_resumed_where_it_stopped(make_gateway: GatewayFactory, simulator: Simulator) -> None:
    gateway = make_gateway(resume_seconds=30)
    words = " ".join(f"w{i}" for i in range(10))
    with cutting_proxy(int(gateway.url.rsplit(":", 1)[1])) as proxy:
        command = [CHATSSE, "chat", "--url", proxy.url, f"echo:{words}[sim: hold_after=3 hold=cli-drop]"]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            assert process.stdout is not None
            first = os.read(process.stdout.fileno(), 100)
            assert first.startswith(b"w0")
            proxy.cut()  # the connection drops mid-reply
            simulator.release("cli-drop")
            rest, stderr = process.communicate(timeout=30)
        assert proxy.connections == 2  # the chat, then the resume
    assert (first + rest).decode() == words + "\n", stderr
    assert process.returncode == 0
    assert len(simulator.requests) == 1
