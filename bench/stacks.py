"""Summarise a py-spy profile (`--format raw`: collapsed stacks) into the shares bench/REPORT.md quotes.

    python bench/stacks.py bench/results/scale/chatsse-SLOW.txt

Where: each sample goes to the library of its innermost frame that belongs to one (so a library's share is its own
cost, not what it calls). Own share: the fraction whose innermost frame is that function. py-spy leaves out the
samples where the process waits; the event loop's own C work shows as `Runner.run`.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# The innermost frame that belongs to one of these decides where a sample's time went (first match wins).
LIBRARIES = [
    ("the event loop itself (uvloop, C: epoll, socket reads, callbacks)", "Runner.run ("),
    ("aiohttp (upstream connection, request writing, response parsing)", "aiohttp/"),
    ("httpx and httpx-aiohttp (request and response objects, streams)", "httpx"),
    ("uvicorn (HTTP parsing, `send`: the socket write)", "uvicorn/"),
    ("chatsse: SSE decoding and event translation", "chatsse/sse.py"),
    ("chatsse: SSE decoding and event translation", "chatsse/chunks.py"),
    ("chatsse: observe middleware (request id, log line, metrics)", "chatsse/observe.py"),
    ("chatsse: everything else", "chatsse/"),
    ("Starlette (routing, middleware, requests)", "starlette/"),
    ("anyio (cancel scopes)", "anyio/"),
    ("asyncio (tasks, futures, timeouts)", "asyncio/"),
]
IDLE = ("select (", "_run_once (asyncio", "run_forever (", "poll (")


def load(path: Path) -> Counter[str]:
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def summary(path: Path, top: int = 12) -> str:
    stacks = load(path)
    busy = Counter({s: n for s, n in stacks.items() if not s.rsplit(";", 1)[-1].startswith(IDLE)})
    total = sum(busy.values()) or 1
    lines = [f"{sum(stacks.values())} samples, {total} busy\n", "| where | share |", "|---|---|"]
    places: Counter[str] = Counter()
    for stack, n in busy.items():
        places[_library(stack)] += n
    lines += [f"| {place} | {100 * n / total:.0f}% |" for place, n in places.most_common()]
    own: Counter[str] = Counter()
    for stack, n in busy.items():
        own[_frame(stack.rsplit(";", 1)[-1])] += n
    lines += ["", "| innermost frame | own share |", "|---|---|"]
    lines += [f"| `{frame}` | {100 * n / total:.1f}% |" for frame, n in own.most_common(top)]
    return "\n".join(lines)


def _library(stack: str) -> str:
    frames = stack.split(";")
    if frames[-1].startswith("Runner.run ("):
        return LIBRARIES[0][0]
    for frame in reversed(frames):
        for name, marker in LIBRARIES[1:]:
            if marker in frame:
                return name
    return "other (stdlib, C extensions)"


def _frame(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "python3.11/"):
        where = where.split(marker, 1)[-1]
    return f"{name} ({where.split('/chatsse/', 1)[-1]})"


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(f"## {argument}\n\n{summary(Path(argument))}\n")
