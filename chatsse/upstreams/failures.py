"""What an upstream's failures mean: httpx and aiohttp errors, and non-2xx answers, as chatsse's errors.

The upstream's own text (which may name URLs, headers or keys) is read for a few safe tokens and never passed on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx

from chatsse.errors import (
    ChatSSEError,
    ContentFiltered,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamDisconnected,
    UpstreamMalformed,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)

_HTTPX_ERRORS: tuple[tuple[type[httpx.HTTPError], type[ChatSSEError]], ...] = (
    # Order matters: most specific first (ConnectTimeout is both a connect and a timeout error).
    (httpx.TimeoutException, UpstreamTimeout),
    (httpx.ConnectError, UpstreamUnreachable),
    (httpx.RemoteProtocolError, UpstreamDisconnected),
    (httpx.NetworkError, UpstreamDisconnected),
    (httpx.DecodingError, UpstreamMalformed),
    (httpx.HTTPError, UpstreamDisconnected),
)


def from_transport_error(exc: httpx.HTTPError) -> ChatSSEError:
    """Map an httpx failure to our error; the httpx text (which names the upstream URL) is dropped."""
    # httpx-aiohttp reports every aiohttp connection error as ConnectTimeout; the cause says what happened.
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientConnectorError):
        return UpstreamUnreachable()
    if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(cause, aiohttp.ServerTimeoutError):
        return UpstreamDisconnected()
    for httpx_class, error_class in _HTTPX_ERRORS:
        if isinstance(exc, httpx_class):
            return error_class()
    return UpstreamDisconnected()  # pragma: no cover - the table ends with the base class


_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_RETRY_IN_TEXT = re.compile(r"(?:retry after|try again in)\s+(\d+(?:\.\d+)?)\s*second", re.IGNORECASE)


def from_upstream_status(status: int, body: bytes, headers: Mapping[str, str]) -> ChatSSEError:
    """Map a non-2xx upstream answer (sent instead of a stream) to our error."""
    error = _error_object(body)
    upstream_code = str(error.get("code") or "")
    inner = error.get("innererror") or error.get("inner_error") or {}
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    if status == 400 and (upstream_code == "content_filter" or inner_code == "ResponsibleAIPolicyViolation"):
        return ContentFiltered()
    if status == 429:
        return RateLimited(retry_after=retry_after_seconds(headers, str(error.get("message") or "")))
    if status in (401, 403):
        return UpstreamAuthFailed(f"{UpstreamAuthFailed.default_message} (Azure answered HTTP {status}.)")
    if status == 404:
        return UpstreamNotFound(f"{UpstreamNotFound.default_message} (Azure answered HTTP 404.)")
    if status >= 500 or status == 408:
        return UpstreamUnavailable(f"{UpstreamUnavailable.default_message} (Azure answered HTTP {status}.)")
    detail = f"HTTP {status}"
    for key in ("code", "param"):
        value = error.get(key)
        if isinstance(value, str) and _SAFE_TOKEN.match(value):
            detail += f", {key} {value}"
    return UpstreamRejected(f"{UpstreamRejected.default_message} (Azure answered {detail}.)")


def retry_after_seconds(headers: Mapping[str, str], message: str = "") -> float | None:
    """How long the upstream asks us to wait: retry-after-ms, then retry-after, then the message text."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            return value
    found = _RETRY_IN_TEXT.search(message)
    return float(found.group(1)) if found else None


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {}
