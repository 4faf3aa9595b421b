"""Who may call and how often: caller keys, a per-caller rate limit, and a bound on header size."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from chatsse.errors import CallerRateLimited, ChatSSEError, HeadersTooLarge, Unauthorized
from chatsse.ratelimit import RateLimiter
from chatsse.record import current_record
from chatsse.settings import Settings

PROTECTED = ("/api/", "/v1/", "/metrics")


def key_id(key: str) -> str:
    """A stable, harmless name for a key in logs: never the key itself."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:10]


class AccessMiddleware:
    """Refuses oversized headers (431), unknown callers on API routes (401) and callers over their rate (429)."""

    def __init__(self, app: ASGIApp, settings: Settings, limiter: RateLimiter | None) -> None:
        self.app = app
        self.keys = [(key.encode(), key_id(key)) for key in settings.api_keys]
        self.max_header_bytes = settings.max_header_bytes
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self._check(scope)
        except ChatSSEError as error:
            await error.response_for(scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check(self, scope: Scope) -> None:
        headers = scope["headers"]
        if sum(len(name) + len(value) for name, value in headers) > self.max_header_bytes:
            raise HeadersTooLarge()
        record = current_record.get()
        caller = self._caller(scope)
        if record is not None:
            record.caller = caller
        if self.limiter is not None and scope["path"].startswith(("/api/", "/v1/")):
            wait = await self.limiter.retry_after(caller)
            if wait is not None:
                raise CallerRateLimited(retry_after=wait)

    def _caller(self, scope: Scope) -> str:
        """The caller's key id when keys are on (raising 401 without a valid one), else the client address."""
        client = scope.get("client")
        address = f"ip:{client[0]}" if client else "ip:unknown"
        if not self.keys or not scope["path"].startswith(PROTECTED):
            return address
        given = _presented_key(scope)
        if given is None:
            raise Unauthorized()
        matched = None
        for key, name in self.keys:
            # Compare with every key, always: the time taken says nothing about which one (or how much) matched.
            if hmac.compare_digest(given, key):
                matched = name
        if matched is None:
            raise Unauthorized("That caller key is not valid.")
        return matched


def _presented_key(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" and token.strip() else None
    if scope["method"] == "GET":  # EventSource cannot send headers
        tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("access_token")
        if tokens:
            return str(tokens[0]).encode()
    return None
