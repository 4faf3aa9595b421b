"""The replies kept in this process: a task reads each one into a `LiveStream`, followers come and go, and a
reply nobody follows is dropped when its window passes (`CHATSSE_RESUME_SECONDS`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from chatsse.errors import ResumeGap, ServerShutdown, StreamNotFound
from chatsse.events import Batch, Failed
from chatsse.resume.live import Followed, LiveStream, may_follow, new_stream_id
from chatsse.server.lifecycle import StreamRegistry
from chatsse.server.metrics import Metrics
from chatsse.upstreams import UpstreamReply

if TYPE_CHECKING:
    from chatsse.resume.redis import RedisStore

log = logging.getLogger("chatsse.resume")


class StreamKeeper:
    """The replies kept in this process: starts their readers, counts their followers, forgets them when due."""

    def __init__(
        self,
        seconds: float,
        max_bytes: int,
        registry: StreamRegistry,
        metrics: Metrics,
        remote: RedisStore | None = None,
    ) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.registry = registry
        self.remote = remote
        self.streams: dict[str, LiveStream] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._checks: set[asyncio.Task[None]] = set()
        self.metrics = metrics
        self.chats: dict[str, str] = {}  # useChat chat id -> its latest stream
        self.replies: dict[str, UpstreamReply] = {}  # the replies still being read, by stream
        self.on_change: Callable[[], None] | None = None  # gauges, with several workers

    @property
    def detached(self) -> int:
        """Streams whose reply is still being read with no client following it."""
        return sum(1 for s in self.streams.values() if not s.followers and not s.ended)

    def keep(
        self, reply: UpstreamReply, owner: str | None, chat_id: str | None = None, origin: str | None = None
    ) -> LiveStream:
        """Read `reply` into a new stream from now on, whoever follows it; `chat_id` names a useChat chat, `origin`
        the request that started it (its trace's ids, for its followers' traces to link to)."""
        stream_id = self.remote.new_stream_id() if self.remote is not None else new_stream_id()
        stream = LiveStream(stream_id, owner, self.max_bytes)
        stream.upstream = reply.upstream
        stream.origin = origin
        self.streams[stream.id] = stream
        if chat_id is not None:
            chat = chat_key(chat_id, owner)
            self.chats[chat] = stream.id
            if self.remote is not None:
                self.remote.chat_started(chat, stream.id, self.seconds)
        if self.remote is not None:
            self.remote.started(stream.id, owner, self.seconds, stream.origin)
        self.replies[stream.id] = reply
        reading = self._read(stream, reply)
        self._tasks[stream.id] = asyncio.create_task(reading, name=f"chatsse-stream-{stream.id}")
        self._forget_later(stream)
        self._changed()
        return stream

    async def _read(self, stream: LiveStream, reply: UpstreamReply) -> None:
        try:
            async for batch in reply.events():
                self._append(stream, batch)
        finally:
            if not stream.finished:  # stopped before its last event (the keeper closing): followers must not wait
                self._append(stream, Batch([Failed.of(ServerShutdown())]))
            await reply.aclose()
            self.registry.closed(reply)
            stream.end()
            if self.remote is not None:
                self.remote.ended(stream.id, self.seconds)
            self._tasks.pop(stream.id, None)
            self.replies.pop(stream.id, None)
            if not stream.followers:
                self._forget_later(stream)  # kept for the window after it ends, too
            self._changed()

    def _append(self, stream: LiveStream, batch: Batch) -> None:
        seq, encoded = stream.append(batch.events)
        if self.remote is not None:
            self.remote.append(stream.id, seq, encoded, stream.first_seq)

    async def stop(self, stream_id: str, owner: str | None) -> bool:
        """End a reply still being read, at once, here or (with Redis) on whichever worker reads it: its upstream
        is closed and its followers get a final done (`stopped`). False if no such reply of `owner`'s is read."""
        if self.find(stream_id, owner) is not None:
            return await self.stop_here(stream_id)
        if self.remote is None:
            return False
        return await self.remote.request_stop(stream_id, owner)

    async def stop_here(self, stream_id: str) -> bool:
        reply = self.replies.get(stream_id)
        if reply is None:
            return False
        await reply.stop()
        return True

    def find(self, stream_id: str, owner: str | None) -> LiveStream | None:
        stream = self.streams.get(stream_id)
        return stream if stream is not None and may_follow(stream.owner, owner) else None

    async def active_stream_of_chat(self, chat_id: str, owner: str | None) -> str | None:
        """The stream of the chat's reply still being produced (here or, with Redis, anywhere), if any."""
        chat = chat_key(chat_id, owner)
        stream_id = self.chats.get(chat)
        stream = self.find(stream_id, owner) if stream_id else None
        if stream is not None:
            return None if stream.ended else stream.id
        if self.remote is None:
            return None
        return await self.remote.active_stream_of_chat(chat, owner)

    async def follow(self, stream_id: str, owner: str | None, after: int) -> Followed:
        """The events after `after`, from this process or from Redis; refuses (404, 410, 503) before the first byte."""
        stream = self.find(stream_id, owner)
        if stream is not None:
            if stream.gap(after):
                self.metrics.resume_gaps.inc()
                raise ResumeGap()
            self.metrics.resumes.inc()
            return Followed(self.follow_local(stream, after), stream.origin)
        if self.remote is None:
            raise StreamNotFound()
        try:
            followed = await self.remote.follow(stream_id, owner, after, self.seconds)
        except ResumeGap:
            self.metrics.resume_gaps.inc()
            raise
        self.metrics.resumes.inc()
        return followed

    async def follow_local(self, stream: LiveStream, after: int) -> AsyncIterator[Batch]:
        self._attach(stream)
        try:
            async for batch in stream.follow(after):
                yield batch
        finally:
            self._detach(stream)

    def _attach(self, stream: LiveStream) -> None:
        stream.followers += 1
        self._changed()
        handle = self._expiry.pop(stream.id, None)
        if handle is not None:
            handle.cancel()

    def _detach(self, stream: LiveStream) -> None:
        stream.followers -= 1
        self._changed()
        if not stream.followers:
            self._forget_later(stream)

    def _forget_later(self, stream: LiveStream) -> None:
        handle = self._expiry.pop(stream.id, None)
        if handle is not None:
            handle.cancel()
        self._expiry[stream.id] = asyncio.get_running_loop().call_later(self.seconds, self._forget, stream)

    def _forget(self, stream: LiveStream) -> None:
        self._expiry.pop(stream.id, None)
        if stream.followers:
            return
        if self.remote is None:
            self._drop(stream)
        else:
            task = asyncio.create_task(self._forget_unless_followed_elsewhere(stream))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def _forget_unless_followed_elsewhere(self, stream: LiveStream) -> None:
        assert self.remote is not None
        if await self.remote.followed_elsewhere(stream.id):
            self._forget_later(stream)  # a client on another worker follows it through Redis
        elif not stream.followers:
            self._drop(stream)

    def _drop(self, stream: LiveStream) -> None:
        """The window passed with nobody following: stop reading the reply (closing the upstream) and drop it."""
        self.streams.pop(stream.id, None)
        for chat_id in [c for c, s in self.chats.items() if s == stream.id]:
            del self.chats[chat_id]
        self._changed()
        task = self._tasks.pop(stream.id, None)
        if task is not None:
            log.info("stream %s: nobody came back for %.0fs; closing its upstream", stream.id[:8], self.seconds)
            task.cancel()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def close(self) -> None:
        for handle in self._expiry.values():
            handle.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def chat_key(chat_id: str, owner: str | None) -> str:
    """Where a useChat chat's reply is found: its id within its owner's (a chat id is the client's to choose, so
    another caller sending the same one must neither overwrite nor find it), hashed to a bounded size."""
    return hashlib.blake2b(f"{owner or ''}\0{chat_id}".encode(), digest_size=16).hexdigest()
