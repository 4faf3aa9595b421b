"""The Responses API's pure parts under random input: a request body is a ResponsesRequest or our 4xx, never another
exception; an upstream's events are typed events or a failure, never an exception, and the same split anywhere."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatsse.errors import ChatSSEError
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
