"""Summarise a py-spy profile (`--format raw`: collapsed stacks) into the shares bench/REPORT.md quotes.

    python bench/stacks.py bench/results/scale/chatsse-SLOW.txt

Inclusive share: the fraction of the gateway's samples with a frame of that layer anywhere on the stack. Own
share: the fraction whose innermost frame is that function. Idle samples (the event loop waiting) are left out.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

LAYERS = {
    "uvicorn's HTTP protocol": "uvicorn/protocols/http",
    "chatsse observe middleware": "chatsse/observe.py",
    "Starlette routing and exception middleware": "starlette/routing.py",
    "CORS middleware": "starlette/middleware/cors.py",
    "chatsse access middleware": "chatsse/access.py",
    "the SSE response (sse-starlette, chatsse's RelayResponse)": "sse_starlette/",
    "upstream request: httpx": "httpx/_client.py",
    "upstream request and reading: aiohttp": "aiohttp/",
    "upstream reply reading and SSE decoding (chatsse)": "chatsse/upstreams/reply.py",
    "anyio task groups and cancel scopes": "anyio/_backends",
}
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
    lines = [f"{sum(stacks.values())} samples, {total} busy\n", "| layer | inclusive share |", "|---|---|"]
    for name, marker in LAYERS.items():
        share = sum(n for s, n in busy.items() if marker in s) / total
        lines.append(f"| {name} | {100 * share:.0f}% |")
    own: Counter[str] = Counter()
    for stack, n in busy.items():
        own[_frame(stack.rsplit(";", 1)[-1])] += n
    lines += ["", "| innermost frame | own share |", "|---|---|"]
    lines += [f"| `{frame}` | {100 * n / total:.1f}% |" for frame, n in own.most_common(top)]
    return "\n".join(lines)


def _frame(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "python3.11/"):
        where = where.split(marker, 1)[-1]
    return f"{name} ({where.split('/chatsse/', 1)[-1]})"


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(f"## {argument}\n\n{summary(Path(argument))}\n")
