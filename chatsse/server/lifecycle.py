"""Open streams: the cap on how many may be open, their count, and the graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from chatsse.errors import Draining, TooManyStreams
from chatsse.upstreams import UpstreamReply

log = logging.getLogger("chatsse")


class StreamRegistry:
    """Admits streams (503 when full or draining) and tracks them until they end."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self.reserved = 0  # admitted, upstream still opening
        self.open: set[UpstreamReply] = set()
        self.draining = False
        self.peak = 0  # the most open at once since memory was last returned (memory.py)
        self.on_change: Callable[[], None] | None = None  # metrics with several workers

    @property
    def count(self) -> int:
        return self.reserved + len(self.open)

    def admit(self) -> None:
        if self.draining:
            raise Draining(retry_after=1)
        if self.max_streams and self.count >= self.max_streams:
            raise TooManyStreams(retry_after=1)
        self.reserved += 1
        if self.count > self.peak:
            self.peak = self.count
        self._changed()

    def opened(self, reply: UpstreamReply | None) -> None:
        """The upstream answered (`reply`) or failed (None): the reservation becomes an open stream or is freed."""
        self.reserved -= 1
        if reply is not None:
            self.open.add(reply)
        self._changed()

    def closed(self, reply: UpstreamReply) -> None:
        self.open.discard(reply)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def drain(self, seconds: float) -> None:
        """Refuse new streams, let open ones finish for up to `seconds`, then end the rest with server_shutdown."""
        self.draining = True
        deadline = time.monotonic() + seconds
        log.info("draining: %d open streams, up to %.0fs", self.count, seconds)
        while self.count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        remaining = list(self.open)
        for reply in remaining:
            await reply.shut_down()
        if remaining:
            log.info("drain: ended %d streams with server_shutdown", len(remaining))
        while self.open and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.02)  # let the farewell events go out


class Exiting(Protocol):
    should_exit: bool  # uvicorn.Server's: serving ends, as after a signal, but the process exits 0


_server: list[Exiting] = []  # the server of this process, handed over by `chatsse serve` (cli.py)


def hand_over(server: Exiting) -> None:
    """The server running this process's app: after a drain, it is asked to exit."""
    _server[:] = [server]


class DrainOnSigterm:
    """Replaces uvicorn's SIGTERM handler while the app runs: drain first, then ask the server handed over to exit
    (its `should_exit`: uvicorn then does not re-raise the signal and the process exits 0). Under a server that was
    not handed over (`uvicorn chatsse.app:factory`), its own handler is called after the drain."""

    def __init__(self, registry: StreamRegistry, seconds: float) -> None:
        self.registry = registry
        self.seconds = seconds
        self.previous: Any = None
        self.task: asyncio.Task[None] | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals belong to the main thread (servers run in threads in tests)
        self.loop = asyncio.get_running_loop()
        self.previous = signal.signal(signal.SIGTERM, self._on_signal)

    def uninstall(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.task is None:
            self.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        self.task = self.loop.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        await self.registry.drain(self.seconds)
        if _server:
            _server[0].should_exit = True
        elif callable(self.previous):
            self.previous(signal.SIGTERM, None)
