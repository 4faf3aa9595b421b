"""The simulator speaks Azure's wire format faithfully: the same shapes as the recorded fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from chatsse.simulator import Simulator
from chatsse.simulator.scenario import parse_scenario
from chatsse.sse import SSEDecoder
from tests.conftest import API_KEY, DEPLOYMENT

FIXTURES = Path(__file__).parent / "fixtures"
PATH = f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21"


def post(simulator: Simulator, content: str, **kwargs: object) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "stream": True, **kwargs}
    return httpx.post(simulator.url + PATH, json=body, headers={"api-key": API_KEY}, timeout=10)


def chunks(response: httpx.Response) -> list[dict[str, object] | str]:
    events = SSEDecoder().decode(response.content)
    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in events]


def test_stream_has_the_shape_of_the_recorded_azure_stream(simulator: Simulator) -> None:
    response = post(simulator, "echo:Hello world", stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["transfer-encoding"] == "chunked"
    assert "apim-request-id" in response.headers
    ours = chunks(response)
    recorded = chunks(httpx.Response(200, content=(FIXTURES / "usage.sse").read_bytes()))
    # Same sequence of kinds: prompt filter, role, content..., finish, usage, [DONE]; same keys in each kind.
    assert len(ours) == 2 + 2 + 3  # prompt filter, role, "Hello", " world", finish, usage, [DONE]
    for mine, theirs in [(ours[0], recorded[0]), (ours[1], recorded[1]), (ours[2], recorded[2])]:
        assert isinstance(mine, dict) and isinstance(theirs, dict)
        assert set(mine) == set(theirs)
        if mine["choices"]:
            assert set(mine["choices"][0]) == set(theirs["choices"][0])  # type: ignore[index]
    assert ours[-3]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert ours[-2]["choices"] == [] and ours[-2]["usage"]["completion_tokens"] == 2  # type: ignore[index]
    assert ours[-1] == "[DONE]"


def test_no_usage_unless_asked(simulator: Simulator) -> None:
    ours = chunks(post(simulator, "echo:Hi"))
    assert all("usage" not in c for c in ours if isinstance(c, dict))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 503])
def test_error_bodies_are_azures(simulator: Simulator, status: int) -> None:
    response = post(simulator, f"hi [sim: status={status} retry_after=4 retry_after_ms=3500]")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) >= {"code", "message"}
    fixture = {400: "error_400_content_filter.json", 401: "error_401.json", 404: "error_404_deployment.json"}
    if status in fixture:
        assert error["code"] == json.loads((FIXTURES / fixture[status]).read_text())["error"]["code"]
    if status == 429:
        assert response.headers["retry-after"] == "4" and response.headers["retry-after-ms"] == "3500"


def test_checks_key_deployment_and_api_version_like_azure(simulator: Simulator) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    base = simulator.url + f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert httpx.post(base + "?api-version=1", json=body, headers={"api-key": "nope"}).status_code == 401
    assert httpx.post(base, json=body, headers={"api-key": API_KEY}).status_code == 404
    other = simulator.url + "/openai/deployments/other/chat/completions?api-version=1"
    assert httpx.post(other, json=body, headers={"api-key": API_KEY}).json()["error"]["code"] == "DeploymentNotFound"
    assert len(simulator.requests) == 3


def test_times_fails_only_the_first_requests(simulator: Simulator) -> None:
    statuses = [post(simulator, "x [sim: status=503 times=2]").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_split_writes_arrive_as_many_reads(simulator: Simulator) -> None:
    body = {"messages": [{"role": "user", "content": "echo:你好😀[sim: split=3]"}], "stream": True}
    with httpx.stream("POST", simulator.url + PATH, json=body, headers={"api-key": API_KEY}) as response:
        reads = list(response.iter_raw())
    assert len(reads) > 100
    text = ""
    for chunk in chunks(httpx.Response(200, content=b"".join(reads))):
        if isinstance(chunk, dict) and chunk["choices"]:
            text += chunk["choices"][0]["delta"].get("content") or ""  # type: ignore[index]
    assert text == "你好😀"


def test_directives_parse_and_unknown_keys_are_ignored() -> None:
    scenario, text = parse_scenario("hello [sim: status=429 delay=0.5 no_done=1 bogus=3 finish=length]")
    assert (scenario.status, scenario.delay, scenario.no_done, scenario.finish) == (429, 0.5, True, "length")
    assert text == "hello"


def test_tool_calls_n_and_logprobs_in_azures_shape(simulator: Simulator) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"properties": {"n": {"type": "integer"}}}}}
    calls = [c for c in chunks(post(simulator, "go [sim: tools=1 arg_pieces=3]", tools=[tool])) if isinstance(c, dict)]
    deltas = [c["choices"][0]["delta"] for c in calls if c["choices"]]  # type: ignore[index]
    assert deltas[1] == {
        "content": None,
        "tool_calls": [{"function": {"arguments": "", "name": "f"}, "id": "call_sim0", "index": 0, "type": "function"}],
    }  # the first piece names the call, as Azure sends it
    assert [d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:-1]] == ['{"n', '":1}']
    assert calls[-1]["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]
    many = [c for c in chunks(post(simulator, "echo:x", n=2, logprobs=True, top_logprobs=1)) if isinstance(c, dict)]
    texts = [(c["choices"][0]["index"], c["choices"][0]["delta"].get("content")) for c in many if c["choices"]]  # type: ignore[index]
    assert [t for t in texts if t[1]] == [(0, "x"), (1, "x"), (1, " #1")]  # the choices' tokens interleaved
    logprobs = [c["choices"][0]["logprobs"] for c in many if c["choices"] and c["choices"][0]["logprobs"]]  # type: ignore[index]
    assert logprobs[0]["content"][0]["token"] == "x" and len(logprobs[0]["content"][0]["top_logprobs"]) == 1
