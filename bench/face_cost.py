"""CPU per chunk of the path from an upstream chunk to each face's bytes, in process (no I/O): the translator, then
the native, OpenAI, useChat or Responses encoding; "/R" paths read an upstream speaking the Responses API. Run it on
this tree and on another commit to compare:

    python bench/face_cost.py
    git worktree add /tmp/before 490ad9f && PYTHONPATH=/tmp/before python bench/face_cost.py

Timings on a shared machine drift; instruction counts do not. `python bench/face_cost.py --instructions` runs
each path under valgrind's callgrind with 0 and 20,000 chunks and prints the difference per chunk.

Before #17 (no chatsse/events.py) the faces parsed the native face's SSE bytes back into JSON first; that is
measured the same way. Since #19 the OpenAI and useChat faces read with the translator's rich mode (every choice,
tool calls, refusals, logprobs). The best of 5 runs of 200,000 chunks each.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

import chatsse
from chatsse.chunks import ChunkTranslator
from chatsse.sse import ServerSentEvent

try:  # since #19
    from chatsse.faces.openai_chunks import Completion  # type: ignore[import-not-found,unused-ignore]

    RICH = True
except ImportError:
    from chatsse.faces.openai_compat import Completion  # type: ignore[attr-defined,no-redef,unused-ignore]

    RICH = False

CHUNK = [ServerSentEvent('{"choices":[{"delta":{"content":"Zq"},"finish_reason":null,"index":0}],"id":"x"}')]
TYPED_EVENTS = (Path(chatsse.__file__).parent / "events.py").exists()
RESPONSES = (Path(chatsse.__file__).parent / "responses").is_dir()
# An upstream speaking the Responses API: one text delta, as Azure sends it.
RESPONSES_DELTA = [
    ServerSentEvent(
        '{"type":"response.output_text.delta","sequence_number":7,"item_id":"msg_1","output_index":0,'
        '"content_index":0,"delta":"Zq","logprobs":[]}',
        "response.output_text.delta",
    )
]


def paths() -> dict[str, Callable[[], Any]]:
    translator = ChunkTranslator()
    rich = ChunkTranslator(rich=True) if RICH else translator  # type: ignore[call-arg,unused-ignore]
    completion = Completion("default", False)
    if TYPED_EVENTS:
        from chatsse.events import Batch  # type: ignore[import-not-found,unused-ignore]
        from chatsse.faces.native import NativeFrames  # type: ignore[import-not-found,unused-ignore]
        from chatsse.faces.ui_stream import UIFrames  # type: ignore[attr-defined,unused-ignore]

        native, ui = NativeFrames(), UIFrames("m")
        completion.first, ui.head, ui.open = False if RICH else b"", b"", "text"  # past the first write, as most are
        found = {
            "native": lambda: native(Batch(translator.feed(CHUNK))),
            "openai": lambda: completion(Batch(rich.feed(CHUNK))),
            "useChat": lambda: ui(Batch(rich.feed(CHUNK))),
        }
        if RESPONSES:
            found |= responses_paths(native, completion)
        return found
    from chatsse.faces import ui_stream

    def parsed(chunk: bytes) -> list[Any]:  # what chatsse.faces.payloads did, without its async generator
        return [orjson.loads(line[6:]) for line in chunk.split(b"\n") if line.startswith(b"data: ")]

    def openai() -> bytes:
        return b"".join(completion._chunk({"content": p["content"]}) for p in parsed(translator.feed(CHUNK)))

    def use_chat() -> bytes:
        delta = {"type": "text-delta", "id": "text-1"}
        return b"".join(ui_stream._chunk({**delta, "delta": p["content"]}) for p in parsed(translator.feed(CHUNK)))

    return {"native": lambda: translator.feed(CHUNK), "openai": openai, "useChat": use_chat}


def responses_paths(native: Any, completion: Any) -> dict[str, Callable[[], Any]]:
    """Since #30: the Responses face over a chat upstream (synthesized), and each face over an upstream speaking
    Responses (its events relayed unchanged to /v1/responses, read as typed events by the others)."""
    from chatsse.events import Batch  # type: ignore[import-not-found,unused-ignore]
    from chatsse.responses.stream import ResponseStream  # type: ignore[import-not-found,unused-ignore]
    from chatsse.responses.translate import ResponsesTranslator  # type: ignore[import-not-found,unused-ignore]

    synthesized, relayed = ResponseStream("default", {}), ResponseStream("default", {})
    rich, plain = ChunkTranslator(rich=True), ResponsesTranslator()
    over_rich, passthrough = ResponsesTranslator(rich=True), ResponsesTranslator(rich=True, passthrough=True)
    for translator in (plain, over_rich, passthrough):  # past the first delta, as almost every read is
        translator.feed(RESPONSES_DELTA)
    synthesized(Batch(rich.feed(CHUNK)))  # its item and content part are open
    return {
        "responses": lambda: synthesized(Batch(rich.feed(CHUNK))),
        "native/R": lambda: native(Batch(plain.feed(RESPONSES_DELTA))),
        "openai/R": lambda: completion(Batch(over_rich.feed(RESPONSES_DELTA))),
        "responses/R": lambda: relayed(Batch(passthrough.feed(RESPONSES_DELTA))),
    }


def instructions(name: str, chunks: int) -> int:
    """Instructions callgrind counts for a process that runs path `name` `chunks` times (start-up included)."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}/cg",
                sys.executable,
                __file__,
                name,
                str(chunks),
            ],
            check=True,
            capture_output=True,
        )
        summary = next(line for line in Path(out, "cg").read_text().splitlines() if line.startswith("summary:"))
        return int(summary.split()[1])


def main() -> None:
    label = "typed events" if TYPED_EVENTS else "re-parsed SSE"
    if len(sys.argv) == 3:  # one path, a given number of times (what --instructions measures)
        path = paths()[sys.argv[1]]
        for _ in range(int(sys.argv[2])):
            path()
        return
    for name, path in paths().items():
        if "--instructions" in sys.argv:
            per_chunk = (instructions(name, 20_000) - instructions(name, 0)) / 20_000
            print(f"{label}: {name:8} {per_chunk:,.0f} instructions per chunk")
            continue
        best = min(timeit.repeat(path, number=200_000, repeat=5)) / 200_000
        print(f"{label}: {name:8} {best * 1e6:.2f} us per chunk")


if __name__ == "__main__":
    main()
