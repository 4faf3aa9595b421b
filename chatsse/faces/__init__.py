"""Other protocols on the same relay: the AI SDK's useChat stream and OpenAI's chat completions.

A face parses its own request into a `ChatRequest`, lets `ChatRelay.open` choose, authenticate and open the
upstream (so keys, limits, failover, resume, logs and metrics are the same for every face), then encodes our
events (`{"content"}`, `{"done"}`, `{"error"}`) in its own format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson


async def payloads(events: AsyncIterator[bytes]) -> AsyncIterator[list[dict[str, Any]]]:
    """Our event bytes (with or without `id:` lines) as the JSON objects they carry, one list per write."""
    async for chunk in events:
        found = []
        for block in chunk.split(b"\n\n"):
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    found.append(orjson.loads(line[6:]))
        if found:
            yield found
