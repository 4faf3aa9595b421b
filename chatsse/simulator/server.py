"""The built-in Azure OpenAI simulator: a real HTTP/1.1 server speaking Azure's streaming wire format.

It is written on asyncio's Protocol rather than a web framework so that it controls every byte (chunked framing,
abrupt cuts, silence) and knows the moment the gateway hangs up. It records each request it received and when its
connection closed, for tests; `--demo` and benchmarks use it too."""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from chatsse.simulator.frames import Frames
from chatsse.simulator.http import Connection, RecordedRequest
from chatsse.simulator.replies import Reply, plan, prompt_text, split_arguments, split_tokens, text_of
from chatsse.simulator.responses import ResponsesSimulation
from chatsse.simulator.safety import answer as content_safety
from chatsse.simulator.scenario import BAD_REQUEST, ERROR_BODIES, RESOURCE_NOT_FOUND, Scenario, parse_scenario

PATH_PREFIX, PATH_SUFFIX = "/openai/deployments/", "/chat/completions"
RESPONSES = re.compile(r"^(/openai/v1|/openai|.*)/responses(/[^/]+(?:/cancel|/input_items)?)?$")
V1_PATH = "/openai/v1/chat/completions"  # Azure's v1 API; any other path ending in /chat/completions is OpenAI's
INVALID_TOKEN = {
    "error": {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API endpoint (Unauthorized. Access token is "
        "missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired.)",
    }
}
MAX_WAIT = 300.0  # no hold or silence outlives this: every simulator wait ends by itself


class Simulator:
    """Start with `await start()` on a running loop or `start_in_thread()`; the reply is chosen by the prompt.

    It serves the three API shapes chatsse speaks: Azure (`/openai/deployments/{d}/chat/completions?api-version=`),
    Azure v1 (`/openai/v1/chat/completions`) and OpenAI-compatible (`.../chat/completions`), the last two naming the
    deployment as `model`. With `api_key`, Azure shapes need it in `api-key` and OpenAI's as `Bearer`; with
    `accepts_token`, a `Bearer` token is checked by that function (Entra ID), and a key alone is refused."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        deployment: str | None = None,
        delay: float = 0.0,
        accepts_token: Callable[[str], bool] | None = None,
        always: str = "",
    ) -> None:
        self.api_key = api_key
        self.deployment = deployment
        self.delay = delay
        self.accepts_token = accepts_token
        # Directives applied to every request, as if each prompt carried `[sim: <always>]`: one simulator can play
        # a rate-limited or failing upstream while another, seeing the same prompt, stays healthy.
        self.always = always
        self.requests: list[RecordedRequest] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._holds: dict[str, asyncio.Event] = {}
        self._failures_served: dict[str, int] = {}
        self.failures = 0  # error answers and dropped connections served, in all
        self.connections: set[Connection] = set()
        self.responses = ResponsesSimulation(self)
        self._tasks: set[asyncio.Future[Any]] = set()

    @property
    def open_connections(self) -> int:
        return len(self.connections)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(lambda: Connection(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self.connections):
                connection.close()
            await self._server.wait_closed()

    def start_in_thread(self) -> str:
        """Run on a private event loop in a daemon thread; returns the base URL."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="chatsse-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the simulator did not start")
        return self.url

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def release(self, name: str = "default") -> None:
        """Let streams waiting at `hold_after` go on (callable from any thread)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(lambda: self._hold(name).set())

    def _hold(self, name: str) -> asyncio.Event:
        return self._holds.setdefault(name, asyncio.Event())

    async def hold(self, name: str) -> None:
        """Wait until the test releases `name` (or the longest wait passes)."""
        await _wait(self._hold(name).wait(), MAX_WAIT)

    def keep(self, task: asyncio.Future[Any]) -> None:
        """Hold a background task until it ends (the loop keeps only a weak reference)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def failure_answer(self, conn: Connection, scenario: Scenario, prompt_key: str) -> bool | None:
        """The error answer (or dropped connection) a failure directive asks for, else None."""
        if not self._should_fail(scenario, prompt_key):
            return None
        self.failures += 1
        if scenario.drop:
            return False  # hang up without a word, as a dying server or a stale keep-alive connection does
        status = scenario.status
        headers = {}
        if status == 429:
            headers["retry-after"] = str(max(1, round(scenario.retry_after)))
            if scenario.retry_after_ms is not None:
                headers["retry-after-ms"] = str(scenario.retry_after_ms)
        return conn.write_json(status, ERROR_BODIES.get(status, ERROR_BODIES[500]), headers)

    def _should_fail(self, scenario: Scenario, prompt_key: str) -> bool:
        if scenario.status == 200 and not scenario.drop:
            return False
        if scenario.chance < 1 and random.random() >= scenario.chance:
            return False
        if scenario.times <= 0:
            return True
        served = self._failures_served.get(prompt_key, 0)
        self._failures_served[prompt_key] = served + 1
        return served < scenario.times

    async def respond(self, conn: Connection, request: RecordedRequest) -> bool:
        """Write the response; returns whether the connection may be reused."""
        path = request.path
        if path.startswith("/contentsafety/"):
            return content_safety(conn, request, self.api_key, self.accepts_token)
        responses = RESPONSES.match(path)
        if responses is not None:
            base = responses.group(1)
            api = "azure-v1" if base == "/openai/v1" else "azure" if base == "/openai" else "openai"
            if api == "azure" and "api-version" not in request.query:
                return conn.write_json(404, RESOURCE_NOT_FOUND)
            refusal = self._refuse_auth(api, request.headers)
            if refusal is not None:
                return conn.write_json(401, refusal)
            return await self.responses.respond(conn, request, responses.group(2) or "")
        chat_api = _api_of(path)
        if chat_api is None:
            return conn.write_json(404, RESOURCE_NOT_FOUND)
        api = chat_api
        if request.method != "POST" or api is None or (api == "azure" and "api-version" not in request.query):
            return conn.write_json(404, RESOURCE_NOT_FOUND)
        refusal = self._refuse_auth(api, request.headers)
        if refusal is not None:
            return conn.write_json(401, refusal)
        try:
            body = request.json
            messages = body["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError("no messages")
            last = prompt_text(messages)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return conn.write_json(400, BAD_REQUEST)
        deployment = path[len(PATH_PREFIX) : -len(PATH_SUFFIX)] if api == "azure" else body.get("model")
        if self.deployment is not None and deployment != self.deployment:
            return conn.write_json(404, ERROR_BODIES[404])
        if body.get("stream") is not True:
            return conn.write_json(400, BAD_REQUEST)
        scenario, _ = parse_scenario(f"[sim: {self.always}] {last}" if self.always else last, self.delay)
        failure = self.failure_answer(conn, scenario, last)
        if failure is not None:
            return failure
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        logprobs = (body.get("top_logprobs") or 0) if body.get("logprobs") is True else None
        frames = Frames(f"chatcmpl-{uuid.uuid4().hex[:24]}", scenario.ascii, include_usage, logprobs)
        return await self._stream(conn, frames, messages, plan(body, messages, scenario), scenario)

    def _refuse_auth(self, api: str, headers: dict[str, str]) -> dict[str, Any] | None:
        """The error body for a request without the credentials this simulator asks for, else None."""
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        bearer = bearer if scheme.lower() == "bearer" else ""
        if self.accepts_token is not None and api != "openai":
            return None if bearer and self.accepts_token(bearer) else INVALID_TOKEN
        if self.api_key is None:
            return None
        given = bearer if api == "openai" else headers.get("api-key")
        return None if given == self.api_key else ERROR_BODIES[401]

    async def _stream(
        self, conn: Connection, frames: Frames, messages: list[Any], reply: Reply, scenario: Scenario
    ) -> bool:
        pieces = _pieces(frames, reply, scenario)
        conn.start_stream(scenario.gzip)
        await conn.send(
            frames.prompt_filter() + b"".join(frames.role(c) for c in range(len(reply.texts) or 1)), scenario.split
        )
        if scenario.first_delay:
            await asyncio.sleep(scenario.first_delay)
        for index in range(scenario.reasoning):
            await conn.send(frames.reasoning(f"{' ' if index else ''}thought{index}"), scenario.split)
        start = time.monotonic()
        for index, piece in enumerate(pieces):
            if index == scenario.cut_after:
                # A pause first, so the bytes already sent are read before the connection drops (aiohttp's reader
                # raises a dropped connection before handing over what it still buffers).
                await asyncio.sleep(0.05)
                conn.cut()
                return False
            if index == scenario.malformed_after:
                await conn.send(frames.malformed(), scenario.split)
            if index == scenario.error_after:
                await conn.send(frames.in_stream_error(), scenario.split)
                conn.end_stream()
                return True
            if index == scenario.hold_after:
                await self.hold(scenario.hold)
                start = time.monotonic() - index * scenario.delay
            if index == scenario.silence_after:
                await asyncio.sleep(min(scenario.silence, MAX_WAIT))
                start = time.monotonic() - index * scenario.delay
            await conn.send(piece, scenario.split)
            if scenario.delay:
                # An absolute schedule: a late wake-up shortens the next sleep instead of adding drift.
                await asyncio.sleep(max(0.0, start + (index + 1) * scenario.delay - time.monotonic()))
        tail = b"".join(frames.finish(reply.finish, choice) for choice in range(len(reply.texts) or 1))
        if frames.include_usage:
            prompt_tokens = sum(len(text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))
            cached, completion = min(scenario.cached, prompt_tokens), len(pieces) + scenario.reasoning  # as billed
            tail += frames.usage(prompt_tokens, completion, cached, scenario.reasoning)
        if not scenario.no_done:
            tail += Frames.DONE
        await conn.send(tail, scenario.split)
        conn.end_stream()
        return True


def _pieces(frames: Frames, reply: Reply, scenario: Scenario) -> list[bytes]:
    """The reply's chunks in the order they go out: the choices' tokens interleaved, or the tool calls' pieces."""
    texts = [split_tokens(text, scenario) for text in reply.texts]
    text_frame = frames.refusal if scenario.refusal else frames.content
    pieces = [
        text_frame(tokens[position], choice)
        for position in range(max(map(len, texts), default=0))
        for choice, tokens in enumerate(texts)
        if position < len(tokens)
    ]
    if reply.legacy:
        call = reply.calls[0]
        arguments = split_arguments(call.arguments, scenario.arg_pieces)
        return [frames.function_call(call.name, "")] + [frames.function_call(None, piece) for piece in arguments]
    calls = [
        [frames.tool_call(i, call.id, call.name, "")]
        + [frames.tool_call(i, None, None, piece) for piece in split_arguments(call.arguments, scenario.arg_pieces)]
        for i, call in enumerate(reply.calls)
    ]
    if scenario.interleave:
        return pieces + [c[p] for p in range(max(map(len, calls), default=0)) for c in calls if p < len(c)]
    return pieces + [piece for call in calls for piece in call]


def _api_of(path: str) -> str | None:
    if path.startswith(PATH_PREFIX) and path.endswith(PATH_SUFFIX):
        return "azure"
    if path == V1_PATH:
        return "azure-v1"
    if path.endswith(PATH_SUFFIX):
        return "openai"
    return None


async def _wait(awaitable: Any, timeout: float) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        pass
