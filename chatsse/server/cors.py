"""CORS for the browsers that need it: Starlette's CORSMiddleware for every request that carries an `Origin` (or
is not a POST); a POST without one (curl, the SDKs, agents, a page on our own origin) passes straight through.

Starlette's middleware wraps every response message of every request in a send of its own (a coroutine per
message, and five objects per open stream for the collector to walk) to add, where no `Origin` came, only
`Vary: Origin`; a POST's answer is never stored by a cache, so that header has no reader there. Figures:
bench/REPORT.md, "Under overload (#35, its third part)".
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class BrowserCORS:
    def __init__(
        self,
        app: ASGIApp,
        allow_origins: Sequence[str],
        allow_methods: Sequence[str],
        allow_headers: Sequence[str],
        expose_headers: Sequence[str],
    ) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=allow_origins,
            allow_methods=allow_methods,
            allow_headers=allow_headers,
            expose_headers=expose_headers,
        )

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: a passing request's own call is returned, so its stream holds no frame of this.
        if scope["type"] == "http" and scope["method"] == "POST" and not _has_origin(scope["headers"]):
            return self.app(scope, receive, send)
        return self.cors(scope, receive, send)


def _has_origin(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"origin" for name, _ in headers)  # ASGI servers give header names in lower case
