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
    path=st.sampled_from(
        ["/api/v1/chat/stream", "/api/v1/models", "/health", "/metrics", "/", "/nope", "/api/v1/chat/stream?message=x"]
    ),
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


# JSON text built by hand, so it can hold what a JSON encoder never writes: lone or reversed surrogate escapes,
# bytes that are not UTF-8 (invalid, overlong, encoded surrogates), NUL escapes, NaN/Infinity, duplicate keys and
# nesting deep enough to trip a parser, all within the body size cap.
STRING_PIECES = st.one_of(
    st.text(max_size=8).map(lambda t: json.dumps(t)[1:-1].encode()),
    st.integers(0xD800, 0xDFFF).map(lambda c: b"\\u%04x" % c),
    st.sampled_from([b"\\ud83d\\ude00", b"\\ude00\\ud83d", b"\\u0000", b"\\n", b'\\"', b"\\\\", b"\\/"]),
    st.sampled_from([b"\xff", b"\xfe", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe9"]),
)
JSON_STRING = st.lists(STRING_PIECES, max_size=6).map(lambda parts: b'"' + b"".join(parts) + b'"')
SCALAR = st.one_of(
    JSON_STRING,
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b"null", b"true", b"0.5"]),
)


def _deep(depth: int, inner: bytes) -> bytes:
    return b"[" * depth + inner + b"]" * depth


JSON_TEXT = st.recursive(
    SCALAR,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda items: b"[" + b",".join(items) + b"]"),
        st.lists(st.tuples(JSON_STRING, children), max_size=3).map(
            lambda pairs: b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"
        ),
        st.tuples(st.integers(1, 3000), children).map(lambda t: _deep(*t)),
    ),
    max_leaves=6,
)
TURN_TEXT = st.tuples(st.sampled_from([b'"user"', b'"system"', b'"u\\u0000ser"']), JSON_TEXT).map(
    lambda t: b'{"role":' + t[0] + b',"content":' + t[1] + b"}"
)
CHAT_BODIES = st.one_of(
    JSON_TEXT,
    st.tuples(JSON_STRING, JSON_STRING).map(lambda t: b'{"message":' + t[0] + b',"message":' + t[1] + b"}"),
    JSON_TEXT.map(lambda v: b'{"message":' + v + b"}"),
    st.tuples(st.sampled_from([b"model", b"temperature", b"top_p", b"max_tokens", b"reasoning_effort"]), JSON_TEXT).map(
        lambda t: b'{"message":"echo:x","' + t[0] + b'":' + t[1] + b"}"
    ),
    st.lists(TURN_TEXT, min_size=1, max_size=3).map(lambda turns: b'{"messages":[' + b",".join(turns) + b"]}"),
    st.lists(JSON_STRING, max_size=3).map(
        lambda texts: (
            b'{"messages":[{"role":"user","content":['
            + b",".join(b'{"type":"text","text":' + t + b"}" for t in texts)
            + b"]}]}"
        )
    ),
)
FACES = ("/v1/chat/completions", "/api/v1/chat/ui")  # the same bad text gets the same care on every face
QUERY_BYTES = st.binary(max_size=12).map(lambda raw: "".join(f"%{b:02X}" for b in raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=CHAT_BODIES, query=QUERY_BYTES)
def test_json_text_with_any_escapes_never_gets_a_5xx(gateway: RunningServer, body: bytes, query: str) -> None:
    with httpx.Client(timeout=10) as client:
        posted = client.post(
            gateway.url + "/api/v1/chat/stream", content=body, headers={"content-type": "application/json"}
        )
        faces = [
            client.post(
                gateway.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
            ),
            client.post(gateway.url + "/api/v1/chat/ui", content=body, headers={"content-type": "application/json"}),
        ]
        model = f"&model={query}" if len(query) % 2 else ""  # sometimes a model too: never a known one
        got = client.get(gateway.url + "/api/v1/chat/stream?message=echo:" + query + model)
    for response in (posted, got, *faces):
        assert response.status_code < 500, response.text
        assert response.headers["x-request-id"]
        if response.status_code >= 400:
            assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
        else:
            assert response.text.rstrip().endswith(("}", "[DONE]"))  # a whole last event
