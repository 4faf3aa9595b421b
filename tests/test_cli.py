"""The real console script and entry points as subprocesses: refusing bad config cleanly, and demo mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from chatsse.simulator.responses import MODEL as SIMULATED_MODEL
from tests.servers import CHATSSE, GatewayProcess, chatsse_serve, clean_env, free_port, healthy, wait_until

NO_AZURE = clean_env()


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env or NO_AZURE, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "command",
    [
        [CHATSSE, "serve"],
        [sys.executable, "-m", "uvicorn", "chatsse.app:factory", "--factory"],
        [sys.executable, "-m", "uvicorn", "chatsse.app:app"],
    ],
    ids=["chatsse-serve", "uvicorn-factory", "uvicorn-app"],
)
def test_missing_settings_refuse_to_start_with_one_clear_message(command: list[str], tmp_path: Path) -> None:
    result = run(command, tmp_path)
    assert result.returncode != 0
    for name in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_DEPLOYMENT_NAME"):
        assert name in result.stderr
    assert ".env.example" in result.stderr
    assert "--demo" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_setting_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "AZURE_OPENAI_ENDPOINT=https://x.openai.azure.com\nAZURE_OPENAI_API_KEY=k\n"
        "AZURE_OPENAI_DEPLOYMENT_NAME=d\nCHATSSE_UPSTREAM_TIMEOUT=soon\n"
    )
    result = run([CHATSSE, "serve"], tmp_path)
    assert result.returncode == 2
    assert "CHATSSE_UPSTREAM_TIMEOUT='soon'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[GatewayProcess]:
    with chatsse_serve(tmp_path, None, "--demo") as gateway:
        yield gateway


def test_demo_mode_streams_without_azure_and_says_it_is_simulated(
    demo_server: GatewayProcess,
) -> None:
    url = demo_server.url
    chunks: list[bytes] = []
    with httpx.stream("POST", url + "/api/v1/chat/stream", json={"message": "Hello demo"}, timeout=10) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            chunks.append(chunk)
    assert len(chunks) > 3  # it streamed: many writes, token by token
    events = [json.loads(block[6:]) for block in b"".join(chunks).decode().split("\n\n") if block.startswith("data: ")]
    assert events[-1]["done"] is True
    assert "Hello demo" in "".join(e.get("content", "") for e in events)
    stderr = demo_server.stop()
    assert "DEMO MODE" in stderr and "SIMULATED" in stderr


@pytest.mark.parametrize("protocol", ["chat", "responses"])
def test_demo_mode_answers_the_responses_api(tmp_path: Path, protocol: str) -> None:
    """`chatsse serve --demo` answers every face; AZURE_OPENAI_PROTOCOL=responses makes its simulator speak
    Responses upstream too."""
    with chatsse_serve(tmp_path, None, "--demo", env={"AZURE_OPENAI_PROTOCOL": protocol}) as gateway:
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key="demo", max_retries=0, timeout=30) as client:
            events = list(client.responses.create(model="default", input="echo:demo on Responses", stream=True))
            text = "".join(getattr(event, "delta", "") for event in events if event.type.endswith("text.delta"))
            assert text == "demo on Responses" and events[-1].type == "response.completed"
            # Relayed from the simulator's own Responses API, or synthesized from its chat completion
            assert events[-1].response.model == (SIMULATED_MODEL if protocol == "responses" else "default")
            chat = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "echo:hi"}])
            assert chat.choices[0].message.content == "hi"
        native = httpx.post(gateway.url + "/api/v1/chat/stream", json={"message": "echo:native"}, timeout=30)
        assert '"content":"native"' in native.text


def test_simulator_runs_alone(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "chatsse.simulator", "--port", str(port), "--delay", "0"]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        assert f"http://127.0.0.1:{port}" in process.stdout.readline()
        body = {"messages": [{"role": "user", "content": "echo:hi there"}], "stream": True}
        response = httpx.post(
            f"http://127.0.0.1:{port}/openai/deployments/any/chat/completions?api-version=2024-10-21",
            json=body,
            timeout=10,
        )
        process.send_signal(signal.SIGINT)
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.text.endswith("data: [DONE]\n\n")
        assert '"content":"hi"' in response.text and '"content":" there"' in response.text


def test_procfile_binds_port_and_runs_web_concurrency_workers(tmp_path: Path) -> None:
    from chatsse.simulator import Simulator

    [web] = [line for line in (Path(__file__).parent.parent / "Procfile").read_text().splitlines() if line]
    assert web.startswith("web: ")
    simulator = Simulator()
    simulator_url = simulator.start_in_thread()
    port = free_port()
    env = {
        **NO_AZURE,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "AZURE_OPENAI_ENDPOINT": simulator_url,
        "AZURE_OPENAI_API_KEY": "k",
        "AZURE_OPENAI_DEPLOYMENT_NAME": "d",
    }
    with subprocess.Popen(
        ["bash", "-c", "exec " + web[len("web: ") :]], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            url = f"http://127.0.0.1:{port}"
            assert wait_until(lambda: healthy(url), timeout=30, interval=0.1)
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            commands = [Path(f"/proc/{child}/cmdline").read_text() for child in children]
            assert sum("spawn_main" in command for command in commands) == 2  # uvicorn's worker processes
            response = httpx.post(url + "/api/v1/chat/stream", json={"message": "echo:via procfile"}, timeout=10)
            assert '"content":" procfile"' in response.text and '"done":true' in response.text
        finally:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=20)
            simulator.stop_thread()
    assert "0.0.0.0:" + str(port) in stderr
