"""The benchmark's lean parts, in one asyncio process: a fake Azure upstream with pre-encoded frames paced on
absolute timers, and a load generator that counts tokens in raw bytes. Both are far cheaper than any gateway."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field

TOKEN = "Zq"  # a token text that appears nowhere else in any of the wire formats
WORKLOAD = re.compile(rb"bench tokens=(\d+) delay=([\d.]+)(?: first=([\d.]+))?")
BATCH = 50  # unpaced tokens are written this many per write, as a bursty upstream does
ANALYZE_SECONDS = 0.03  # Azure AI Content Safety's text:analyze, answered after this long (a nearby region's trip)
_ANALYSIS = json.dumps({"blocklistsMatch": [], "categoriesAnalysis": [{"category": "Violence", "severity": 0}]})
ANALYSIS = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (
    len(_ANALYSIS),
    _ANALYSIS.encode(),
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _event(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), sort_keys=True).encode() + b"\n\n"


_SAFE = {"hate": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "safe"}}
_ID = {"created": 1742460935, "id": "chatcmpl-bench", "model": "gpt-4o", "object": "chat.completion.chunk"}
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
    + _chunk(
        _event({"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": []})
        + _event(
            {**_ID, "choices": [{"delta": {"content": "", "role": "assistant"}, "finish_reason": None, "index": 0}]}
        )
    )
)
CONTENT = _event(
    {
        **_ID,
        "choices": [{"content_filter_results": _SAFE, "delta": {"content": TOKEN}, "finish_reason": None, "index": 0}],
    }
)


def tail(tokens: int) -> bytes:
    usage = {"completion_tokens": tokens, "prompt_tokens": 4, "total_tokens": tokens + 4}
    return (
        _chunk(
            _event({**_ID, "choices": [{"delta": {}, "finish_reason": "stop", "index": 0}]})
            + _event({**_ID, "choices": [], "usage": usage})
            + b"data: [DONE]\n\n"
        )
        + b"0\r\n\r\n"
    )


# The same reply in the Responses API's wire format, for a request to .../responses. Sequence numbers are a fixed
# width so that every frame is pre-encoded once (nothing on the way reads them).
def _response_event(kind: str, **fields: object) -> bytes:
    payload = {"type": kind, "sequence_number": 1000, **fields}
    return b"event: " + kind.encode() + b"\ndata: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


_RESPONSE = {"id": "resp_bench", "object": "response", "status": "in_progress", "model": "gpt-5-codex", "output": []}
_AT = {"item_id": "msg_bench", "output_index": 0}
RESPONSES_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
    + _chunk(
        _response_event("response.created", response=_RESPONSE)
        + _response_event("response.in_progress", response=_RESPONSE)
        + _response_event("response.output_item.added", output_index=0, item={"id": "msg_bench", "type": "message"})
        + _response_event("response.content_part.added", **_AT, content_index=0, part={"type": "output_text"})
    )
)
RESPONSES_CONTENT = _response_event("response.output_text.delta", **_AT, content_index=0, delta=TOKEN, logprobs=[])
# What the load generator counts for Responses events: their final events repeat the whole text.
RESPONSES_TOKEN = b'"delta":"' + TOKEN.encode() + b'"'


def responses_tail(tokens: int) -> bytes:
    usage = {"input_tokens": 4, "output_tokens": tokens, "total_tokens": tokens + 4}
    done = {**_RESPONSE, "status": "completed", "usage": usage}
    return (
        _chunk(
            _response_event("response.output_text.done", **_AT, content_index=0, text="", logprobs=[])
            + _response_event("response.output_item.done", output_index=0, item={"id": "msg_bench", "type": "message"})
            + _response_event("response.completed", response=done)
        )
        + b"0\r\n\r\n"
    )


class _UpstreamConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.request_line = b""
        self.content, self.tail = CONTENT, tail  # chat completions' frames, or the Responses API's
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio classes

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        length = int(re.search(rb"(?i)content-length: *(\d+)", self.buffer[:head_end]).group(1))  # type: ignore[union-attr]
        if len(self.buffer) < head_end + 4 + length:
            return
        self.request_line = self.buffer[: self.buffer.find(b"\r\n")]
        body, self.buffer = self.buffer[head_end + 4 : head_end + 4 + length], self.buffer[head_end + 4 + length :]
        assert self.transport is not None
        if b"/contentsafety/" in self.request_line:  # a content_safety guard's check: answered after a round trip
            self.loop.call_later(ANALYZE_SECONDS, self._answer_analysis)
            return
        found = WORKLOAD.search(body)
        tokens, delay = (int(found.group(1)), float(found.group(2))) if found else (10, 0.0)
        first = float(found.group(3)) if found and found.group(3) else 0.0
        responses = b"/responses " in self.request_line
        self.content, self.tail = (RESPONSES_CONTENT, responses_tail) if responses else (CONTENT, tail)
        self.transport.write(RESPONSES_HEAD if responses else HEAD)
        start = self.loop.time() + first  # a slow first token (a reasoning model thinking), then the pace
        if delay > 0:
            self.loop.call_at(start, self._paced, 0, tokens, delay, start)
        elif first:
            self.loop.call_at(start, self._burst, 0, tokens)
        else:
            self._burst(0, tokens)

    def _answer_analysis(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ANALYSIS)
            if self.buffer:  # the next request on this kept-alive connection came already
                self.data_received(b"")

    def _paced(self, sent: int, tokens: int, delay: float, start: float) -> None:
        # An absolute schedule: token i is due at start + i * delay, however late the previous one ran.
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(_chunk(self.content))
        sent += 1
        if sent == tokens:
            self.transport.write(self.tail(tokens))
            return
        self.loop.call_at(start + sent * delay, self._paced, sent, tokens, delay, start)

    def _burst(self, sent: int, tokens: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        batch = min(BATCH, tokens - sent)
        self.transport.write(_chunk(self.content * batch))
        sent += batch
        if sent == tokens:
            self.transport.write(self.tail(tokens))
        else:
            self.loop.call_soon(self._burst, sent, tokens)


async def start_upstream(port: int = 0) -> tuple[asyncio.Server, int]:
    server = await asyncio.get_running_loop().create_server(_UpstreamConnection, "127.0.0.1", port, backlog=4096)
    return server, server.sockets[0].getsockname()[1]


@dataclass
class StreamResult:
    sent_at: float = 0.0
    first_at: float | None = None
    token_times: list[float] = field(default_factory=list)
    tokens: int = 0
    done: bool = False
    error: str | None = None
    status: int = 0  # the response's HTTP status (a refusal: 503)
    answered_at: float | None = None  # when its first byte came


class _ClientConnection(asyncio.Protocol):
    """One streaming request; counts TOKEN in the raw bytes (carrying a byte over read boundaries)."""

    def __init__(
        self,
        request: bytes,
        done_marker: bytes,
        result: StreamResult,
        finished: asyncio.Future[None],
        token: bytes = TOKEN.encode(),
    ):
        self.request = request
        self.done_marker = done_marker
        self.token = token
        self.result = result
        self.finished = finished
        self.carry = b""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.result.sent_at = time.perf_counter()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.result.answered_at is None:
            self.result.answered_at = now
            self.result.status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") and data[9:12].isdigit() else 0
        # Carry fewer bytes than a marker's length, so that nothing is counted twice.
        window = self.carry[-(len(self.token) - 1) :] + data
        count = window.count(self.token)
        if count:
            if self.result.first_at is None:
                self.result.first_at = now
            self.result.token_times.append(now)
            self.result.tokens += count
        if self.done_marker in self.carry + data:
            self.result.done = True
            assert self.transport is not None
            self.transport.close()
        self.carry = (self.carry + data)[-(max(len(self.done_marker), len(self.token)) - 1) :]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.result.done and self.result.error is None:
            self.result.error = "closed before done"
        if not self.finished.done():
            self.finished.set_result(None)


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    path: str
    body: str  # with {message}
    done_marker: bytes
    token: bytes = TOKEN.encode()  # what counts one token in the bytes a client reads
    bearer: str | None = None  # a caller key, sent as `authorization: Bearer`

    def request(self, message: str) -> bytes:
        body = self.body.replace("{message}", message).encode()
        auth = f"authorization: Bearer {self.bearer}\r\n" if self.bearer else ""
        return (
            f"POST {self.path} HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\ncontent-type: application/json\r\n"
            f"api-key: bench\r\n{auth}content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode() + body


async def run_streams(
    target: Target, streams: int, tokens: int, delay: float, stagger: float, first: float = 0.0
) -> list[StreamResult]:
    """Open `streams` concurrent streams (start times spread over `stagger` s); wait for all, bounded in time."""
    loop = asyncio.get_running_loop()
    request = target.request(f"bench tokens={tokens} delay={delay} first={first}")
    results = [StreamResult() for _ in range(streams)]
    finished: list[asyncio.Future[None]] = [loop.create_future() for _ in range(streams)]
    transports: list[asyncio.BaseTransport] = []

    async def one(index: int) -> None:
        await asyncio.sleep(stagger * index / max(1, streams))
        try:
            transport, _ = await loop.create_connection(
                lambda: _ClientConnection(request, target.done_marker, results[index], finished[index], target.token),
                "127.0.0.1",
                target.port,
            )
            transports.append(transport)
        except OSError as exc:
            results[index].error = f"connect: {exc}"
            finished[index].set_result(None)

    bound = stagger + first + tokens * delay * 3 + 60  # every run ends by itself
    await asyncio.gather(*(one(i) for i in range(streams)))
    _, pending = await asyncio.wait(finished, timeout=bound)
    for transport in transports:
        transport.close()
    for index, future in enumerate(finished):
        if future in pending:
            results[index].error = "timed out"
    return results


async def run_closed_loop(target: Target, clients: int, total: int, tokens: int) -> list[StreamResult]:
    """`clients` loops, each opening a new connection per request, until `total` streams ran (or 120 s passed)."""
    loop = asyncio.get_running_loop()
    request = target.request(f"bench tokens={tokens} delay=0")
    results: list[StreamResult] = []
    deadline = loop.time() + 120

    async def client() -> None:
        while len(results) < total and loop.time() < deadline:
            result = StreamResult()
            results.append(result)
            finished: asyncio.Future[None] = loop.create_future()
            try:
                protocol = _ClientConnection(request, target.done_marker, result, finished, target.token)
                transport, _ = await loop.create_connection(lambda p=protocol: p, "127.0.0.1", target.port)
            except OSError as exc:
                result.error = f"connect: {exc}"
                continue
            try:
                await asyncio.wait_for(finished, 30)
            except TimeoutError:
                result.error = "timed out"
            transport.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


RATE_LIMITED = b'{"error":{"code":"429","message":"Requests to ChatCompletions_Create are rate-limited."}}'


class _RateLimitedConnection(asyncio.Protocol):
    """An upstream that answers every request 429 with `retry-after-ms: 0`, so a gateway tries it every time."""

    def __init__(self) -> None:
        self.buffer = b""
        self.request_line = b""
        self.content, self.tail = CONTENT, tail  # chat completions' frames, or the Responses API's
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (head_end := self.buffer.find(b"\r\n\r\n")) >= 0:
            found = re.search(rb"(?i)content-length: *(\d+)", self.buffer[:head_end])
            end = head_end + 4 + (int(found.group(1)) if found else 0)
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                b"retry-after-ms: 0\r\ncontent-length: %d\r\n\r\n%b" % (len(RATE_LIMITED), RATE_LIMITED)
            )


async def start_rate_limited_upstream() -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_RateLimitedConnection, "127.0.0.1", 0, backlog=4096)
    return server, server.sockets[0].getsockname()[1]
