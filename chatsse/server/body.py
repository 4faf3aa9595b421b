"""A request's body and query within their limits: JSON only (415), bounded in size (413) and in time (408)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from chatsse.errors import PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from chatsse.schema import parse_query
from chatsse.settings import Settings


async def read_json_body(
    request: Request, limit: int, timeout: float, setting: str = "CHATSSE_MAX_BODY_BYTES"
) -> bytes:
    """The request body, checked for type, size and time (415, 413, 408); `setting` names the limit."""
    _require_json(request)
    try:
        # asyncio's own timeout: anyio's fail_after cost a short reply measurably more (bench/REPORT.md).
        async with asyncio.timeout(timeout):
            return await _read_body(request, limit, setting)
    except TimeoutError:
        raise RequestTimeout() from None


async def read_media_body(request: Request, settings: Settings) -> bytes:
    """The JSON body of a route that takes images as data: URLs, within CHATSSE_MAX_MEDIA_BODY_BYTES."""
    limit = settings.max_media_body_bytes
    return await read_json_body(request, limit, settings.body_timeout, "CHATSSE_MAX_MEDIA_BODY_BYTES")


def bounded_query(request: Request, limit: int) -> dict[str, str]:
    """The query string's parameters; a `message` longer than `limit` bytes is 413, as in a body."""
    query = parse_query(request.scope["query_string"])
    if len(query.get("message", "").encode()) > limit:
        raise _too_large(limit)
    return query


def _too_large(limit: int, setting: str = "CHATSSE_MAX_BODY_BYTES") -> PayloadTooLarge:
    return PayloadTooLarge(f"The request is larger than {limit} bytes ({setting}).")


def _require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType()


async def _read_body(request: Request, limit: int, setting: str) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (never read whole into memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, setting)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit, setting)
        parts.append(part)
    return b"".join(parts)
