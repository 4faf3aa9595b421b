"""The pure SSE decoder and the chunk translator: fixtures, spec edge cases, and any split of the bytes."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatsse.chunks import ChunkTranslator
from chatsse.events import Batch
from chatsse.faces.native import NativeFrames
from chatsse.sse import ServerSentEvent, SSEDecoder, encode_json_event

FIXTURES = Path(__file__).parent / "fixtures"
STREAMS = sorted(p.name for p in FIXTURES.glob("*.sse"))


def decode_in_pieces(data: bytes, cuts: list[int]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    start = 0
    for cut in sorted(set(cuts)):
        events += decoder.decode(data[start:cut])
        start = cut
    events += decoder.decode(data[start:])
    return events


def expected(name: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((FIXTURES / name.replace(".sse", ".meta.json")).read_text())["expected"]
    return meta


def translate(events: list[ServerSentEvent]) -> tuple[ChunkTranslator, list[dict[str, Any]]]:
    translator = ChunkTranslator()
    out = NativeFrames()(Batch(translator.feed(events)))
    translator.end_of_stream()
    ours = [json.loads(e.data) for e in SSEDecoder().decode(out)]
    return translator, ours


# --- decoder -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STREAMS)
def test_fixture_decodes_the_same_whole_byte_by_byte_and_in_random_pieces(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    whole = SSEDecoder().decode(data)
    assert len(whole) == expected(name)["events"]
    assert decode_in_pieces(data, list(range(len(data)))) == whole
    rng = random.Random(name)
    for _ in range(20):
        assert decode_in_pieces(data, rng.sample(range(len(data)), k=min(len(data), 30))) == whole


def test_spec_edge_cases() -> None:
    events = SSEDecoder().decode((FIXTURES / "edge_cases.sse").read_bytes())
    assert [e.data for e in events] == [
        '{"n":1}',
        '{"n":\n2}',
        '{"error":{"message":"boom"}}',
        "",
        "[DONE]",
        '{"n":"after-done"}',
    ]
    assert events[2].event == "error" and events[2].id == "7"
    assert events[3].id == "7"  # the last event id persists
    assert events[0].retry == 3000
    assert events[0].event == "message"


def test_lines_split_only_on_cr_and_lf() -> None:
    data = "data: a\u2028b\x85c\x1cd\x0be\u2029f\n\n".encode()
    assert SSEDecoder().decode(data) == [ServerSentEvent("a\u2028b\x85c\x1cd\x0be\u2029f")]


def test_crlf_split_across_reads_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: x\r") == []
    assert decoder.decode(b"\n") == []
    assert decoder.decode(b"\r\n") == [ServerSentEvent("x")]


def test_lone_cr_ends_lines() -> None:
    assert SSEDecoder().decode(b"data: a\rdata: b\r\rdata: c\r\r") == [ServerSentEvent("a\nb"), ServerSentEvent("c")]


def test_bom_split_across_reads_is_dropped_once() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"\xef") == []
    assert decoder.decode(b"\xbb") == []
    # A later BOM is just a character: here it makes an unknown field name, which is ignored.
    assert decoder.decode(b"\xbfdata: x\n\n\xef\xbb\xbfdata: y\n\n") == [ServerSentEvent("x")]


def test_field_forms() -> None:
    data = b"data:no-space\ndata\nid: a\0b\nretry: 12x\nunknown: v\n:comment\n\n"
    [event] = SSEDecoder().decode(data)
    assert event == ServerSentEvent("no-space\n", "message", "", None)


def test_partial_event_at_eof_is_held_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: complete\n\ndata: partial") == [ServerSentEvent("complete")]
    assert decoder.has_partial_event


LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r"])
FIELD_TEXT = st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=30)


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent]]:
    """A valid stream of data-only events with mixed line endings, comments and maybe a BOM."""
    events = draw(st.lists(st.tuples(st.lists(FIELD_TEXT, min_size=1, max_size=3), st.booleans()), max_size=8))
    text = "\ufeff" if draw(st.booleans()) else ""

    def end() -> str:
        ending = draw(LINE_ENDS)
        # A CR then an LF would be one CRLF line end, not two.
        return "\r\n" if ending == "\n" and text.endswith("\r") else ending

    expected_events = []
    for lines, with_comment in events:
        if with_comment:
            text += ":" + draw(FIELD_TEXT)
            text += end()
        for line in lines:
            text += "data: " + line
            text += end()
        text += end()
        expected_events.append(ServerSentEvent("\n".join(lines)))
    return text.encode(), expected_events


@settings(max_examples=300, deadline=None)
@given(stream=event_streams(), data=st.data())
def test_any_split_of_a_valid_stream_yields_the_same_events(
    stream: tuple[bytes, list[ServerSentEvent]], data: st.DataObject
) -> None:
    raw, events = stream
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=40))
    assert decode_in_pieces(raw, cuts) == events


# --- encoder -------------------------------------------------------------------------------------


@given(st.text())
def test_encoded_event_is_one_data_line_that_round_trips(text: str) -> None:
    encoded = encode_json_event({"content": text})
    assert encoded.endswith(b"\n\n") and b"\n" not in encoded[:-2] and b"\r" not in encoded
    [event] = SSEDecoder().decode(encoded)
    assert json.loads(event.data) == {"content": text}


# --- chunk translator ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in STREAMS if n not in ("edge_cases.sse",)])
def test_translator_on_fixtures(name: str) -> None:
    want = expected(name)
    translator, ours = translate(SSEDecoder().decode((FIXTURES / name).read_bytes()))
    text = "".join(e["content"] for e in ours if "content" in e)
    assert text == want["text"]
    if want["saw_done"] and want["finish_reason"] and not want["error_events"]:
        assert translator.failure is None
        filtered = {"filtered": translator.filtered} if want["finish_reason"] == "content_filter" else {}
        assert ours[-1] == {
            "done": True,
            "finish_reason": want["finish_reason"],
            **({"usage": want["usage"]} if want["usage"] else {}),
            **filtered,
        }
    else:
        assert translator.failure is not None
        assert not any("done" in e for e in ours)


def test_content_filter_results_name_the_categories_hit_and_rich_mode_relays_what_says_something() -> None:
    events = SSEDecoder().decode((FIXTURES / "content_filter_midstream.sse").read_bytes())
    plain_out = ChunkTranslator().feed(events)
    assert plain_out[-1].payload()["filtered"] == ["protected_material_text"]
    rich = ChunkTranslator(rich=True)
    notes = [e.payload()["annotation"] for e in rich.feed(events) if type(e).__name__ == "Annotation"]
    assert notes[0]["prompt_filter_results"][0]["content_filter_results"]["hate"] == {
        "filtered": False,
        "severity": "safe",
    }
    # The asynchronous filter's two annotations (no delta, with offsets); the all-clear on tokens is not repeated.
    assert [n.get("content_filter_offsets", {}).get("check_offset") for n in notes[1:]] == [65, 65]
    assert notes[2]["content_filter_results"] == {"protected_material_text": {"detected": True, "filtered": True}}
    default = SSEDecoder().decode((FIXTURES / "normal.sse").read_bytes())
    quiet = ChunkTranslator(rich=True)
    assert sum(type(e).__name__ == "Annotation" for e in quiet.feed(default)) <= 1  # the prompt's, at most
    assert quiet.filtered is None


def test_translator_failure_kinds() -> None:
    def failure_of(*datas: str) -> str:
        translator = ChunkTranslator()
        translator.feed([ServerSentEvent(d) for d in datas])
        translator.end_of_stream()
        assert translator.failure is not None
        return translator.failure.code

    assert failure_of('{"choices": [') == "upstream_malformed"
    assert failure_of("[1, 2]") == "upstream_malformed"
    assert failure_of('{"error": {"message": "x"}}') == "upstream_error"
    assert failure_of("[DONE]") == "upstream_disconnected"  # [DONE] without a finish_reason
    assert failure_of('{"choices": [{"delta": {"content": "x"}}]}') == "upstream_disconnected"


def test_late_content_filter_overrides_stop_and_events_after_done_are_ignored() -> None:
    translator = ChunkTranslator()
    out = NativeFrames()(
        Batch(
            translator.feed(
                [
                    ServerSentEvent('{"choices": [{"delta": {"content": "x"}, "finish_reason": null}]}'),
                    ServerSentEvent('{"choices": [{"delta": {}, "finish_reason": "stop"}]}'),
                    ServerSentEvent('{"choices": [{"finish_reason": "content_filter"}]}'),
                    ServerSentEvent("[DONE]"),
                    ServerSentEvent('{"choices": [{"delta": {"content": "after"}}]}'),
                ]
            )
        )
    )
    assert out == b'data: {"content":"x"}\n\ndata: {"done":true,"finish_reason":"content_filter"}\n\n'


CHUNK_STREAM = (FIXTURES / "usage.sse").read_bytes()


USAGE_TEXT = "Hello! How can I assist you today?"


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_truncated_upstream_is_never_a_success_with_less_text(data: st.DataObject) -> None:
    raw = CHUNK_STREAM[: data.draw(st.integers(0, len(CHUNK_STREAM)))]
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10))
    translator, ours = translate(decode_in_pieces(raw, cuts))
    text = "".join(e["content"] for e in ours if "content" in e)
    if translator.done:
        assert text == USAGE_TEXT and ours[-1]["usage"]["total_tokens"] == 106
    else:
        assert translator.failure is not None and USAGE_TEXT.startswith(text)
        assert not any("done" in e for e in ours)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_corrupted_upstream_ends_in_exactly_one_of_done_or_failure(data: st.DataObject) -> None:
    raw = bytearray(CHUNK_STREAM)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[position] = data.draw(st.integers(0, 255))
        else:
            del raw[position]
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10))
    translator, ours = translate(decode_in_pieces(bytes(raw), cuts))
    assert translator.done != (translator.failure is not None)
    assert sum("done" in e for e in ours) == (1 if translator.done else 0)
    assert all(set(e) in ({"content"}, {"done", "finish_reason"}, {"done", "finish_reason", "usage"}) for e in ours)
