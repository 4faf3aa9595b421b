"""Connections before they are requests: a deadline for request headers, and a cap on open connections.

uvicorn gives a connection that never finishes its headers all the time it wants (3,000 such sockets against
`chatsse serve` were all still open after 70 s), and accepts connections until the process runs out of file
descriptors. This protocol is uvicorn's own (httptools) with both bounds added; `chatsse serve` runs it.
"""

from __future__ import annotations

import asyncio
import os
import resource
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from chatsse.errors import ChatSSEError, RequestTimeout, TooManyConnections
from chatsse.settings import Settings
from chatsse.sse import encode_json

HEADROOM_FDS = 100  # for upstream connections, Redis, logs and the listening socket


class GuardedHttpProtocol(HttpToolsProtocol):
    """Closes a connection whose request headers take longer than `header_timeout`; answers 503 and closes a
    connection that would exceed `max_connections`."""

    header_timeout = 10.0
    max_connections = 0  # 0: no cap
    accepted = 0  # connections this process took from the listening socket: their rate, for shedding (overload.py)
    sharing = 1  # the worker processes accepting from that socket, this one included

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        GuardedHttpProtocol.accepted += 1
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        if self.max_connections and len(self.connections) > self.max_connections:
            transport.write(_BUSY)
            transport.close()
            return
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # each request on a kept-alive connection gets the same deadline for its headers

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if self.header_timeout:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_header_deadline", None) is not None:
            assert self._header_deadline is not None
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.write(_TOO_SLOW)
            self.transport.close()


def configure(settings: Settings) -> type[GuardedHttpProtocol]:
    """Set the bounds for this process's connections (each uvicorn worker calls this through the app factory)."""
    GuardedHttpProtocol.header_timeout = settings.header_timeout
    GuardedHttpProtocol.max_connections = settings.max_connections or default_max_connections()
    workers = os.environ.get("WEB_CONCURRENCY", "1")
    GuardedHttpProtocol.sharing = max(1, int(workers)) if workers.strip().isdigit() else 1
    return GuardedHttpProtocol


def default_max_connections() -> int:
    """Without CHATSSE_MAX_CONNECTIONS: half the process's file limit, less some for the rest, because every
    streaming connection also holds one to its upstream. Past the limit, accept() and upstream connects fail and
    clients hang or get 502s; under the cap they get a clean 503 (found by the benchmark's 10,000 streams)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(HEADROOM_FDS, (soft - HEADROOM_FDS) // 2) if soft != resource.RLIM_INFINITY else 0


def _raw_response(error: ChatSSEError) -> bytes:
    """The whole HTTP response for `error`, written straight to the socket: there is no request to answer yet."""
    body = encode_json(error.payload())
    status = HTTPStatus(error.status_code)
    headers = {"content-type": "application/json", "content-length": str(len(body)), **error.headers()}
    head = f"HTTP/1.1 {status.value} {status.phrase}\r\n" + "".join(f"{k.lower()}: {v}\r\n" for k, v in headers.items())
    return (head + "connection: close\r\n\r\n").encode() + body


_BUSY = _raw_response(TooManyConnections(retry_after=1))
_TOO_SLOW = _raw_response(RequestTimeout("The request headers arrived too slowly (CHATSSE_HEADER_TIMEOUT)."))
