"""Client-side helpers: read a chatsse stream the way a client would, event by event."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from httpx_sse import aconnect_sse

STREAM = "/api/v1/chat/stream"


async def chat(client: httpx.AsyncClient, base_url: str, payload: Any) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """POST a chat; return the response and its events' JSON (empty when it was not a stream)."""
    async with aconnect_sse(client, "POST", base_url + STREAM, json=payload) as source:
        if source.response.status_code != 200:
            await source.response.aread()
            return source.response, []
        events = [json.loads(event.data) async for event in source.aiter_sse()]
        return source.response, events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(event["content"] for event in events if "content" in event)


def kinds(events: list[dict[str, Any]]) -> list[str]:
    """Each event's kind: content, done or error (exactly one key decides)."""
    return [next(k for k in ("content", "done", "error") if k in event) for event in events]


def metric(text: str, name: str) -> float:
    """The value of the series `name` (labels included) in Prometheus text; an assertion error if it is not there."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} is not in the metrics"
    return float(found.group(1))
