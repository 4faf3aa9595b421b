"""The Responses API's pure parts under random input: a request body is a ResponsesRequest or our 4xx, never another
exception; an upstream's events are typed events or a failure, never an exception, and the same split anywhere."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatsse.errors import ChatSSEError
from chatsse.events import Batch, Content, Done, Failed, Reasoning, Refusal, ToolCall
from chatsse.responses import ResponseStream
from chatsse.responses.convert import responses_body
from chatsse.responses.request import parse_responses
from chatsse.responses.translate import ResponsesTranslator
from chatsse.sse import ServerSentEvent, SSEDecoder

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
KIND = st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "item_reference", 5, None])
ITEM = st.fixed_dictionaries(
    {"type": KIND},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]),
        "content": VALUES
        | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["input_text", "x"])}, optional={"text": VALUES})),
        "call_id": VALUES,
        "name": VALUES,
        "arguments": VALUES,
        "output": VALUES,
    },
)
BODY = st.fixed_dictionaries(
    {"model": st.sampled_from(["default", "nope", 3])},
    optional={
        "input": st.text(max_size=20) | st.lists(ITEM, max_size=4) | VALUES,
        "instructions": VALUES,
        "tools": st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["function", "web_search"])}, optional={"name": VALUES, "parameters": VALUES}
            ),
            max_size=2,
        )
        | VALUES,
        "tool_choice": VALUES | st.sampled_from(["auto", "none", "required"]),
        "text": st.fixed_dictionaries({}, optional={"format": VALUES, "verbosity": VALUES}) | VALUES,
        "reasoning": st.fixed_dictionaries({}, optional={"effort": VALUES}) | VALUES,
        "max_output_tokens": VALUES,
        "temperature": VALUES,
        "previous_response_id": VALUES,
        "background": VALUES,
        "stream": VALUES,
        "store": VALUES,
    },
)


@settings(max_examples=400, deadline=None)
@given(body=BODY | VALUES)
def test_any_body_is_a_request_or_our_error(body: Any) -> None:
    try:
        parsed = parse_responses(body, ["default"])
    except ChatSSEError as error:
        assert 400 <= error.status_code < 500 and error.message
        return
    assert parsed.chat.model == "default" and parsed.body is body
    try:
        sent = responses_body(parsed.chat, "deployment", 100, False)
    except ChatSSEError as error:  # a field the Responses API lacks: only from a chat that came another way
        raise AssertionError(f"a /v1/responses body was refused on its way upstream: {error.message}") from None
    assert sent["model"] == "deployment" and sent["stream"] is True
    json.dumps(sent)  # JSON all the way


EVENT_TYPES = st.sampled_from(
    [
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
        "response.refusal.delta",
        "response.completed",
        "response.incomplete",
        "response.failed",
        "error",
        "response.something_new",
    ]
)
EVENT = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    EVENT_TYPES,
    st.dictionaries(st.sampled_from(["delta", "item", "response", "item_id", "error"]), VALUES, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(EVENT | VALUES, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=4),
    rich=st.booleans(),
    passthrough=st.booleans(),
)
def test_any_upstream_events_are_typed_events_or_a_failure(
    events: list[Any], cuts: list[int], rich: bool, passthrough: bool
) -> None:
    stream = "".join(f"event: x\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    whole = ResponsesTranslator(rich=rich, passthrough=passthrough)
    expected = whole.feed([ServerSentEvent(json.dumps(e), "x") for e in events])
    whole.end_of_stream()
    assert whole.over and (whole.done or whole.failure is not None)
    decoder, pieces = SSEDecoder(), ResponsesTranslator(rich=rich, passthrough=passthrough)
    got, at = [], 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        got += pieces.feed(decoder.decode(stream[at:cut]))
        at = max(at, cut)
    pieces.end_of_stream()
    assert got == expected and pieces.usage == whole.usage
    assert (pieces.failure is None) == (whole.failure is None)


TYPED = st.one_of(
    st.builds(Content, st.text(max_size=5)),
    st.builds(lambda t: Content(t, 0, {"content": [{"token": t, "logprob": -0.1}]}), st.text(min_size=1, max_size=3)),
    st.builds(Reasoning, st.text(min_size=1, max_size=5)),
    st.builds(Refusal, st.text(min_size=1, max_size=5)),
    st.builds(
        ToolCall, st.integers(0, 2), st.none() | st.just("call_1"), st.none() | st.just("f"), st.text(max_size=4)
    ),
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(TYPED, max_size=12), batch=st.integers(1, 4), end=st.sampled_from(["stop", "length", "fail"]))
def test_a_synthesized_stream_is_consistent(events: list[Any], batch: int, end: str) -> None:
    """Whatever the typed events, the Responses events are numbered from 0, every delta lands in an item that was
    added, each text part's deltas add up to its done text, and the final Response holds every item as it ended."""
    stream = ResponseStream("default", {})
    last: Any = Failed("upstream_disconnected", "cut") if end == "fail" else Done(end, {"prompt_tokens": 1})
    batches = [Batch(events[i : i + batch]) for i in range(0, len(events), batch)] + [Batch([last])]
    wire = b"".join(stream(b) for b in batches).decode()
    parsed = [json.loads(block.split("\ndata: ", 1)[1]) for block in wire.split("\n\n") if block]
    assert [p["sequence_number"] for p in parsed] == list(range(len(parsed)))
    assert parsed[0]["type"] == "response.created" and parsed[-1]["type"] in (
        "response.completed", "response.incomplete", "response.failed",
    )  # fmt: skip
    added: set[str] = set()
    texts: dict[tuple[str, int], str] = {}
    for p in parsed:
        if p["type"] == "response.output_item.added":
            added.add(p["item"]["id"])
        elif p["type"] == "response.output_text.delta":
            assert list(p) == [
                "type", "sequence_number", "item_id", "output_index", "content_index", "delta", "logprobs",
            ]  # fmt: skip
            assert p["item_id"] in added
            key = (p["item_id"], p["content_index"])
            texts[key] = texts.get(key, "") + p["delta"]
        elif p["type"] == "response.output_text.done":
            assert texts.get((p["item_id"], p["content_index"]), "") == p["text"]
    final = parsed[-1]["response"]
    assert [item["id"] for item in final["output"]] == sorted(added, key=[i["id"] for i in final["output"]].index)
    shown = "".join(e.text for e in events if isinstance(e, Content))
    written = "".join(
        part["text"] for item in final["output"] if item["type"] == "message" for part in item["content"]
        if part["type"] == "output_text"
    )  # fmt: skip
    assert written == shown
