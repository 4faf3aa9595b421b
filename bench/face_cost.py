"""CPU per chunk of the path from an upstream chunk to each face's bytes, in process (no I/O): the translator, then
the native, OpenAI or useChat encoding. Run it on this tree and on another commit to compare:

    python bench/face_cost.py
    git worktree add /tmp/before 490ad9f && PYTHONPATH=/tmp/before python bench/face_cost.py

Before #17 (no chatsse/events.py) the faces parsed the native face's SSE bytes back into JSON first; that is
measured the same way. The best of 5 runs of 200,000 chunks each.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

import chatsse
from chatsse.chunks import ChunkTranslator
from chatsse.faces.openai_compat import Completion
from chatsse.sse import ServerSentEvent

CHUNK = [ServerSentEvent('{"choices":[{"delta":{"content":"Zq"},"finish_reason":null,"index":0}],"id":"x"}')]
TYPED_EVENTS = (Path(chatsse.__file__).parent / "events.py").exists()


def paths() -> dict[str, Callable[[], Any]]:
    translator = ChunkTranslator()
    completion = Completion("default", False)
    if TYPED_EVENTS:
        from chatsse.events import Batch  # type: ignore[import-not-found,unused-ignore]
        from chatsse.faces.native import NativeFrames  # type: ignore[import-not-found,unused-ignore]
        from chatsse.faces.ui_stream import UIFrames  # type: ignore[attr-defined,unused-ignore]

        native, ui = NativeFrames(), UIFrames("m")
        completion.first, ui.head, ui.open = b"", b"", "text"  # past the first write, as almost every chunk is
        return {
            "native": lambda: native(Batch(translator.feed(CHUNK))),
            "openai": lambda: completion(Batch(translator.feed(CHUNK))),
            "useChat": lambda: ui(Batch(translator.feed(CHUNK))),
        }
    from chatsse.faces import ui_stream

    def parsed(chunk: bytes) -> list[Any]:  # what chatsse.faces.payloads did, without its async generator
        return [orjson.loads(line[6:]) for line in chunk.split(b"\n") if line.startswith(b"data: ")]

    def openai() -> bytes:
        return b"".join(completion._chunk({"content": p["content"]}) for p in parsed(translator.feed(CHUNK)))

    def use_chat() -> bytes:
        delta = {"type": "text-delta", "id": "text-1"}
        return b"".join(ui_stream._chunk({**delta, "delta": p["content"]}) for p in parsed(translator.feed(CHUNK)))

    return {"native": lambda: translator.feed(CHUNK), "openai": openai, "useChat": use_chat}


def main() -> None:
    label = "typed events" if TYPED_EVENTS else "re-parsed SSE"
    for name, path in paths().items():
        best = min(timeit.repeat(path, number=200_000, repeat=5)) / 200_000
        print(f"{label}: {name:8} {best * 1e6:.2f} us per chunk")


if __name__ == "__main__":
    main()
