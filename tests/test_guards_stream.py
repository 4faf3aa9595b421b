"""Guards on what streams back (#34): Azure AI Content Safety on the reply while it streams (a window per sentence,
checked while earlier windows go out), on every face; and every guard on a Responses upstream's own events, which
the /v1/responses face relays: deltas rewritten, the done events and the Response as released, a block ending the
response as `incomplete` with reason `content_filter`."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatsse.events import Done, Event, Passthrough
from chatsse.guards.config import guards_from
from chatsse.guards.passthrough import PassthroughScreen
from chatsse.guards.stream import Screen
from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM, metric
from tests.servers import API_KEY, free_port, wait_until
from tests.test_guards import CARD, FACES_PROMPT, FACES_REPLY, KEY, PII, TIGHT, guards_toml
from tests.test_ui_face import UI, chunks, ui_body

HARM = "echo:It was a calm day. Then sim-harm:Violence=6 came along. And the rest went on."
CALM = "It was a calm day."


def watch_toml(endpoint: str, extra: str = "") -> str:
    return (
        'guards = ["safety"]\n\n[[guard]]\nname = "safety"\nkind = "content_safety"\non = "output"\n'
        f'endpoint = "{endpoint}"\nkey_env = "CS_KEY"\nthresholds = {{ Violence = 4 }}\n{extra}'
    )


def gateway_with(make_gateway: GatewayFactory, tmp_path: Path, text: str, **overrides: Any) -> Any:
    problems: list[str] = []
    tables = guards_from(tomllib.loads(text), str(tmp_path / "chatsse.toml"), problems, {"CS_KEY": API_KEY})
    assert not problems, problems
    return make_gateway(guards=tables, **overrides)


def data_of(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


def analyzed(simulator: Simulator) -> list[str]:
    return [r.json["text"] for r in simulator.requests if r.path.endswith("text:analyze")]


def test_content_safety_checks_the_streamed_reply_a_sentence_at_a_time_on_every_face(
    tmp_path: Path, make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = gateway_with(make_gateway, tmp_path, watch_toml(simulator.url))
    clean = data_of(httpx.post(gateway.url + STREAM, json={"message": "echo:One. Two! Three? And four"}).text)
    assert "".join(e.get("content", "") for e in clean) == "One. Two! Three? And four"
    assert clean[-1]["finish_reason"] == "stop"
    # One call per sentence. Windows are checked concurrently, so they may reach the simulator in any order.
    assert sorted(analyzed(simulator)) == sorted(["One.", " Two!", " Three?", " And four"])

    native = data_of(httpx.post(gateway.url + STREAM, json={"message": HARM}).text)
    assert "".join(e.get("content", "") for e in native) == CALM
    assert native[-1] == {"done": True, "finish_reason": "content_filter", "filtered": ["safety"]}
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key="-", max_retries=0)
    streamed = list(
        sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": HARM}], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == CALM
    assert streamed[-1].choices[0].finish_reason == "content_filter"
    response = sdk.responses.create(model="default", input=HARM)
    assert response.output_text == CALM and response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "content_filter"
    parts = chunks(httpx.post(gateway.url + UI, json=ui_body({"type": "text", "text": HARM})).text)
    assert "".join(p["delta"] for p in parts if isinstance(p, dict) and p.get("type") == "text-delta") == CALM
    assert parts[-2]["finishReason"] == "content-filter"
    scrape = httpx.get(gateway.url + "/metrics").text
    assert metric(scrape, 'chatsse_guard_actions_total{action="block",guard="safety",on="output"}') == 4
    # On output only: the prompts said the same, and every one of them reached the upstream.
    assert sum(1 for r in simulator.requests if "/contentsafety/" not in r.path) == 5
    sdk.close()  # its pooled connection, not left to the collector (ResourceWarning)


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_content_safety_down_on_output_follows_on_error_and_never_lets_unchecked_text_out_when_closed(
    tmp_path: Path, make_gateway: GatewayFactory, simulator: Simulator, on_error: str
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    gateway = gateway_with(
        make_gateway, tmp_path, watch_toml(down, f'on_error = "{on_error}"\ntimeout = 0.5\n'), resume_seconds=0
    )
    events = data_of(httpx.post(gateway.url + STREAM, json={"message": "echo:Some words. More words."}).text)
    text = "".join(e.get("content", "") for e in events)
    if on_error == "open":
        assert text == "Some words. More words." and events[-1]["finish_reason"] == "stop"
    else:
        assert text == "" and events[-1]["error"]["code"] == "guard_unavailable"
    scrape = httpx.get(gateway.url + "/metrics").text
    assert metric(scrape, 'chatsse_guard_failures_total{guard="safety"}') >= 1


def test_a_content_safety_block_mid_stream_closes_the_upstream_within_a_second(
    tmp_path: Path, make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    gateway = gateway_with(make_gateway, tmp_path, watch_toml(simulator.url))
    message = {"message": HARM + " tail tail tail[sim: hold_after=14 hold=cs]"}
    with httpx.stream("POST", gateway.url + STREAM, json=message, timeout=30) as reply:
        body = b"".join(reply.iter_bytes()).decode()
        ended = time.monotonic()
    assert data_of(body)[-1]["filtered"] == ["safety"]
    upstream = next(r for r in reversed(simulator.requests) if "/contentsafety/" not in r.path)
    assert wait_until(lambda: upstream.peer_closed_at is not None, timeout=5)
    assert upstream.peer_closed_at is not None and upstream.peer_closed_at - ended < 1.0
    simulator.release("cs")
    scrape = httpx.get(gateway.url + "/metrics").text
    assert metric(scrape, 'chatsse_tokens_total{caller="anonymous",model="default",type="estimated"}') > 0


def responses_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    kinds = [line[7:] for line in body.splitlines() if line.startswith("event: ")]
    return list(zip(kinds, data_of(body), strict=True))


def test_guards_rewrite_a_responses_upstreams_own_events(
    tmp_path: Path, make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    toml = guards_toml().replace('kind = "pii"\n', 'kind = "pii"\non = "output"\n', 1)
    gateway = gateway_with(make_gateway, tmp_path, toml, api="azure-v1", protocol="responses")
    asked = {"model": "default", "input": FACES_PROMPT + "[sim: builtin=1]", "stream": True}
    body = httpx.post(gateway.url + "/v1/responses", json=asked).text
    assert "4111 1111" not in body and "ana.ruiz" not in body and KEY not in body  # ids are hex: no spaces
    events = responses_events(body)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert "".join(d["delta"] for k, d in events if k == "response.output_text.delta") == FACES_REPLY
    assert [d["text"] for k, d in events if k == "response.output_text.done"] == [FACES_REPLY]
    assert "response.sim_future.delta" in [k for k, _ in events]  # what the guards do not read still passes
    kind, completed = events[-1]
    message = [i for i in completed["response"]["output"] if i["type"] == "message"]
    assert kind == "response.completed" and message[0]["content"][0]["text"] == FACES_REPLY
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key="-", max_retries=0)
    assert sdk.responses.create(model="default", input=FACES_PROMPT).output_text == FACES_REPLY
    sdk.close()  # its pooled connection, not left to the collector (ResourceWarning)


def test_a_block_ends_a_responses_upstreams_response_as_incomplete(
    tmp_path: Path, make_gateway: GatewayFactory, simulator: Simulator
) -> None:
    toml = guards_toml().replace('guards = ["pii"]', 'guards = ["banned", "safety"]') + 'on = "output"\n\n'
    toml += watch_toml(simulator.url).split("\n\n", 1)[1]
    gateway = gateway_with(make_gateway, tmp_path, toml, api="azure-v1", protocol="responses")
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key="-", max_retries=0)
    for prompt, released, guard in (
        ("echo:all fine until project zeus and more", "all fine until ", "banned"),
        (HARM, CALM, "safety"),
    ):
        events = list(sdk.responses.create(model="default", input=prompt, stream=True))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == released
        assert [e.sequence_number for e in events] == list(range(len(events)))
        last = events[-1]
        assert last.type == "response.incomplete" and last.response.incomplete_details is not None
        assert last.response.incomplete_details.reason == "content_filter" and last.response.output_text == released
        whole = sdk.responses.create(model="default", input=prompt)
        assert whole.status == "incomplete" and whole.output_text == released
        scrape = httpx.get(gateway.url + "/metrics").text
        assert metric(scrape, f'chatsse_guard_actions_total{{action="block",guard="{guard}",on="output"}}') == 2
    sdk.close()  # its pooled connection, not left to the collector (ResourceWarning)


def upstream_events(pieces: list[str]) -> list[Passthrough]:
    """A Responses upstream's events for one message whose text arrives in `pieces`."""
    text, at = "".join(pieces), {"item_id": "msg_1", "output_index": 0}
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "content": [part]}
    shapes: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": {"id": "resp_1", "status": "in_progress", "output": []}}),
        ("response.output_item.added", {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}}),
        ("response.content_part.added", {**at, "content_index": 0, "part": {**part, "text": ""}}),
        *(("response.output_text.delta", {**at, "content_index": 0, "delta": p}) for p in pieces),
        ("response.output_text.done", {**at, "content_index": 0, "text": text}),
        ("response.content_part.done", {**at, "content_index": 0, "part": part}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": {"id": "resp_1", "status": "completed", "output": [item]}}),
    ]
    return [Passthrough(k, json.dumps({"type": k, "sequence_number": n, **f})) for n, (k, f) in enumerate(shapes)]


@settings(max_examples=400, deadline=None)
@given(
    before=st.text(alphabet="abc xyz.,\n", max_size=200),
    secret=st.sampled_from([CARD, KEY, "ana.ruiz@example.org", "DE89 3704 0044 0532 0130 00"]),
    after=st.text(alphabet="abc xyz.,\n", max_size=200),
    cuts=st.lists(st.integers(0, 500), max_size=20),
    batch=st.integers(1, 5),
    guard=st.sampled_from([PII, TIGHT]),
)
def test_a_secret_split_at_any_offset_in_a_responses_upstreams_deltas_never_leaves(
    before: str, secret: str, after: str, cuts: list[int], batch: int, guard: Any
) -> None:
    whole = f"{before} {secret} {after}"
    at = sorted({c for c in cuts if 0 < c < len(whole)})
    pieces = [whole[i:j] for i, j in zip([0, *at], [*at, len(whole)], strict=True)]
    upstream = upstream_events(pieces)
    screen = PassthroughScreen(Screen([guard], lambda g: None))
    out: list[Event] = []
    for start in range(0, len(upstream), batch):
        out += screen(list(upstream[start : start + batch]), False)
    out += screen([Done("stop")], True)
    expected = PII.detector.redact(whole)[0]
    relayed = [(e.kind, json.loads(e.data)) for e in out if isinstance(e, Passthrough)]
    deltas = [d["delta"] for k, d in relayed if k == "response.output_text.delta"]
    so_far = ""
    for delta in deltas:  # each delta is the next part of the redacted text: no prefix of the secret leaves
        so_far += delta
        assert expected.startswith(so_far)
    assert so_far == expected and secret not in json.dumps(relayed)
    assert [d["sequence_number"] for _, d in relayed] == list(range(len(relayed)))
    done = {k: d for k, d in relayed if not k.endswith(".delta")}
    assert done["response.output_text.done"]["text"] == expected
    assert done["response.content_part.done"]["part"]["text"] == expected
    assert done["response.output_item.done"]["item"]["content"][0]["text"] == expected
    assert done["response.completed"]["response"]["output"][0]["content"][0]["text"] == expected
    assert isinstance(out[-1], Done) and out[-1].finish_reason == "stop"
