"""Random requests against a real gateway: never a 500 or a traceback, never a hang; always our JSON errors."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import RunningServer

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
TURN = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", ""]), "content": JSON_VALUES}
)
BODIES = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"message": JSON_VALUES}).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"messages": st.lists(TURN, max_size=3)}).map(lambda v: json.dumps(v).encode()),
)
HEADER_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip)
HEADERS = st.dictionaries(
    st.sampled_from(["content-type", "x-request-id", "authorization", "origin", "accept", "x-forwarded-for"]),
    st.one_of(HEADER_VALUE, st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"])),
    max_size=4,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD"]),
    path=st.sampled_from(["/api/v1/chat/stream", "/health", "/metrics", "/", "/nope", "/api/v1/chat/stream?message=x"]),
    headers=HEADERS,
    body=BODIES,
)
def test_random_requests_get_clear_answers(
    gateway: RunningServer, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    with httpx.Client(timeout=10) as client:  # a hang fails here, by timeout
        response = client.request(method, gateway.url + path, headers=headers, content=body)
    assert response.status_code < 500 or response.status_code == 502, response.text
    assert "Traceback" not in response.text
    if response.status_code >= 400 and method != "HEAD" and response.headers.get("content-type") == "application/json":
        error = response.json()["error"]
        assert error["code"] and error["message"] and error["request_id"] == response.headers["x-request-id"]
    if response.status_code == 200 and response.headers.get("content-type", "").startswith("text/event-stream"):
        assert response.text.rstrip().endswith("}")  # the stream ended with a whole event (done or error)
