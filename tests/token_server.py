"""A local token server speaking App Service's managed-identity protocol, for azure-identity to fetch real tokens from.

azure-identity's ManagedIdentityCredential, seeing IDENTITY_ENDPOINT and IDENTITY_HEADER, sends
`GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<resource>` with the header `X-IDENTITY-HEADER` and expects
`{"access_token", "expires_on" (epoch seconds, as a string), "resource", "token_type"}`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.servers import serve_in_thread

SECRET_HEADER = "local-identity-header-5b2e"
RESOURCE = "https://cognitiveservices.azure.com"


@dataclass
class TokenServer:
    """Issues tokens that live `lifetime` seconds; the simulator asks `accepts()` whether one is current."""

    lifetime: int = 3600
    delay: float = 0.0  # seconds each issue takes (to show that requests do not wait for it)
    failing: bool = False
    issued: dict[str, float] = field(default_factory=dict)  # token -> expires_on
    issue_times: list[float] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def accepts(self, token: str) -> bool:
        with self._lock:
            expires_on = self.issued.get(token)
            return expires_on is not None and time.time() < expires_on and token not in self.revoked

    def revoke_all(self) -> None:
        with self._lock:
            self.revoked.update(self.issued)

    async def issue(self, request: Request) -> JSONResponse:
        if request.headers.get("x-identity-header") != SECRET_HEADER:
            return JSONResponse({"error": "bad identity header"}, status_code=401)
        if request.query_params.get("resource") != RESOURCE:
            return JSONResponse({"error": "unknown resource"}, status_code=400)
        if self.delay:
            await anyio.sleep(self.delay)
        if self.failing:
            return JSONResponse({"error": "unavailable", "error_description": "identity down"}, status_code=400)
        token = f"entra-token-{uuid.uuid4().hex}"
        expires_on = int(time.time()) + self.lifetime
        with self._lock:
            self.issued[token] = expires_on
            self.issue_times.append(time.monotonic())
        return JSONResponse(
            {"access_token": token, "expires_on": str(expires_on), "resource": RESOURCE, "token_type": "Bearer"}
        )


@contextmanager
def running_token_server(server: TokenServer) -> Iterator[TokenServer]:
    app = Starlette(routes=[Route("/msi/token", server.issue, methods=["GET"])])
    with serve_in_thread(app) as running:
        server.url = running.url + "/msi/token"
        yield server
