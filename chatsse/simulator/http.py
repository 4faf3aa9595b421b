"""The simulator's HTTP/1.1 side: parse keep-alive requests, write plain or chunked responses, drop connections."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit


@dataclass
class RecordedRequest:
    """One request as the simulator saw it; times are `time.monotonic()`."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None  # the whole response was written
    peer_closed_at: float | None = None  # the client hung up before the response was complete

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def closed(self) -> bool:
        return self.finished_at is not None or self.peer_closed_at is not None


class Responder(Protocol):
    """What a connection needs of the server it belongs to (the Simulator): no import of it, so no circle."""

    requests: list[RecordedRequest]
    connections: set[Connection]

    async def respond(self, conn: Connection, request: RecordedRequest) -> bool: ...


REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: parses requests, runs the simulator's response for each."""

    def __init__(self, simulator: Responder) -> None:
        self.simulator = simulator
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.compressor: Any = None  # a stream's gzip compressor, while it is being sent compressed
        self.current: RecordedRequest | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (a TCP server's), though not an asyncio.Transport subclass on uvloop, which an older
        # uvicorn makes every new loop in the process use.
        self.transport = cast(asyncio.Transport, transport)
        self.simulator.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is None:
            self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.simulator.connections.discard(self)
        if self.current is not None and self.current.finished_at is None:
            self.current.peer_closed_at = time.monotonic()
        if self.task is not None:
            self.task.cancel()

    def _next_request(self) -> None:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end].decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(self.buffer) < head_end + 4 + length:
            return
        body = self.buffer[head_end + 4 : head_end + 4 + length]
        self.buffer = self.buffer[head_end + 4 + length :]
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.current = RecordedRequest(method, url.path, query, headers, body)
        self.simulator.requests.append(self.current)
        self.task = asyncio.get_running_loop().create_task(self._run(self.current))

    async def _run(self, request: RecordedRequest) -> None:
        reusable = await self.simulator.respond(self, request)
        request.finished_at = time.monotonic()
        self.task = None
        self.current = None
        if not reusable or request.headers.get("connection", "").lower() == "close":
            self.close()
        elif self.buffer:
            self._next_request()

    # Writing -------------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def write_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> bool:
        body = json.dumps(payload, separators=(",", ":")).encode()
        lines = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            f"apim-request-id: {uuid.uuid4()}",
            "x-ms-region: Simulated",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return True

    def start_stream(self, gzip: bool = False) -> None:
        """The stream's head; `gzip`: its body compressed (flushed at every chunk), as a proxy might, asked or not."""
        request_id = uuid.uuid4()
        self.compressor = zlib.compressobj(wbits=31) if gzip else None
        self._write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n"
            + (b"content-encoding: gzip\r\n" if gzip else b"")
            + f"apim-request-id: {request_id}\r\nx-request-id: {request_id}\r\nx-ms-region: Simulated\r\n"
            "x-ratelimit-remaining-requests: 99\r\nx-ratelimit-remaining-tokens: 99000\r\n\r\n".encode()
        )

    async def send(self, data: bytes, piece: int) -> None:
        """One HTTP chunk, or pieces of `piece` bytes with a pause between so they arrive as separate reads."""
        if self.compressor is not None:
            data = self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        if piece <= 0:
            self._write(b"%x\r\n%b\r\n" % (len(data), data))
            return
        for start in range(0, len(data), piece):
            part = data[start : start + piece]
            self._write(b"%x\r\n%b\r\n" % (len(part), part))
            await asyncio.sleep(0)

    def end_stream(self) -> None:
        if self.compressor is not None:
            rest, self.compressor = self.compressor.flush(), None
            self._write(b"%x\r\n%b\r\n" % (len(rest), rest))
        self._write(b"0\r\n\r\n")

    def cut(self) -> None:
        """Drop the connection mid-body, as a network failure would."""
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
