"""Who may call and how often: caller keys, a per-caller rate limit, and a bound on header size."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from chatsse.callers.config import ANONYMOUS
from chatsse.callers.identity import Caller, current_caller
from chatsse.callers.keys import key_sha256
from chatsse.errors import CallerRateLimited, ChatSSEError, HeadersTooLarge, KeyExpired, Unauthorized
from chatsse.ratelimit import RateLimiter
from chatsse.record import current_record
from chatsse.settings import Settings

API = ("/api/", "/v1/", "/openai/")  # the routes a caller's key (or [anonymous]) is for
PROTECTED = (*API, "/metrics")
ADMIN = "/api/v1/admin/"


def key_id(key: str) -> str:
    """A stable, harmless name for a key in logs: never the key itself."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:10]


class Keyring:
    """Who may call: every caller key with its caller (and its expiry), the admin keys, the [anonymous] limits.
    `configure` builds them from settings, at start-up and again when the configuration is reloaded."""

    def __init__(self, settings: Settings) -> None:
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        # Plain keys (CHATSSE_API_KEYS) by their SHA-256, with a harmless id; named callers by theirs, each key with
        # its expiry (a rotated key and its successor overlap).
        keys: list[tuple[bytes, Caller, float | None]] = [
            (key_sha256(key).encode(), Caller(key_id(key), key_id(key), None, keyed=True), None)
            for key in settings.api_keys
        ]
        teams = {team.name: Caller(f"team:{team.name}", team.name, team) for team in settings.callers.teams}
        for config in settings.callers.callers:
            caller = Caller(config.name, config.name, config, True, teams.get(config.team or ""), config.admin)
            keys += [(key.sha256.encode(), caller, key.expires) for key in config.every_key()]
        # Admin keys read the spend report, and nothing else: elsewhere they are unknown keys.
        admin_keys: list[tuple[bytes, Caller, float | None]] = [
            (key_sha256(key).encode(), Caller("admin:" + key_id(key)[4:], "admin", keyed=True, admin=True), None)
            for key in settings.admin_keys
        ]
        # One assignment: a request sees the old keys or the new ones, never half of each.
        self.keys, self.admin_keys, self.anonymous = keys, admin_keys, settings.callers.anonymous


class AccessMiddleware:
    """Finds who calls (`current_caller`): refuses oversized headers (431), unknown callers on API routes (401) and
    callers over CHATSSE_RATE_LIMIT (429). A caller's own limits are the relay's to apply, where the model is known."""

    def __init__(self, app: ASGIApp, settings: Settings, limiter: RateLimiter | None, keyring: Keyring) -> None:
        self.app = app
        self.max_header_bytes = settings.max_header_bytes
        self.limiter = limiter
        self.keyring = keyring

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine unless the rate limit is asked: an admitted stream holds no frame of this. The caller is
        # set in the request's own task (uvicorn runs each request in one), so it needs no reset after it.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        try:
            caller = self._identify(scope)
        except ChatSSEError as error:
            return error.response_for(scope["path"])(scope, receive, send)
        if self.limiter is not None and scope["path"].startswith(API):
            return self._limited(caller, scope, receive, send)
        current_caller.set(caller)
        return self.app(scope, receive, send)

    async def _limited(self, caller: Caller, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.limiter is not None
        wait = await self.limiter.retry_after(caller.identity)
        if wait is not None:
            await CallerRateLimited(retry_after=wait).response_for(scope["path"])(scope, receive, send)
            return
        current_caller.set(caller)
        await self.app(scope, receive, send)

    def _identify(self, scope: Scope) -> Caller:
        if sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_header_bytes:
            raise HeadersTooLarge()
        caller = self._caller(scope)
        record = current_record.get()
        if record is not None:
            record.caller = caller.identity
        return caller

    def _caller(self, scope: Scope) -> Caller:
        """The caller whose key was presented (401 for a wrong one, and for none on API routes when keys are on
        and there is no [anonymous] table), else an anonymous caller named by its client address."""
        client, ring = scope.get("client"), self.keyring
        anonymous = Caller(f"ip:{client[0]}" if client else "ip:unknown", ANONYMOUS, ring.anonymous)
        path = scope["path"]
        if not (ring.keys or ring.admin_keys and path.startswith(ADMIN)) or not path.startswith(PROTECTED):
            return anonymous
        given = _presented_key(scope)
        if given is None:
            if (
                ring.anonymous is not None
                and path.startswith(("/api/", "/v1/", "/openai/"))
                and not path.startswith(ADMIN)
            ):
                return anonymous
            raise Unauthorized()
        digest = hashlib.sha256(given).hexdigest().encode()
        matched: tuple[Caller, float | None] | None = None
        keys = ring.keys + ring.admin_keys if path.startswith(ADMIN) else ring.keys
        for key, caller, expires in keys:
            # Compare with every key, always: the time taken says nothing about which one (or how much) matched.
            if hmac.compare_digest(digest, key):
                matched = caller, expires
        if matched is None:
            raise Unauthorized("That caller key is not valid.")
        caller, expires = matched
        if expires is not None and time.time() >= expires:
            raise KeyExpired()
        return caller


def _presented_key(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" and token.strip() else None
        if name == b"api-key" and value.strip():  # how Azure's SDKs send a key
            return bytes(value).strip()
    if scope["method"] == "GET":  # EventSource cannot send headers
        tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("access_token")
        if tokens:
            return str(tokens[0]).encode()
    return None
