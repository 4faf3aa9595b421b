"""Kept replies copied to Redis Streams (standalone or a Redis Cluster), so a client can resume on any worker or
instance (`follow.py`), and learns within seconds when the instance reading its reply died.

The keys, all expiring, are `keys.py`'s: a stream's share one hash tag, the bucket its id starts with, which each
process draws once for all the streams it reads: its writes go to one slot, in one script call per cycle, as on a
single Redis.

Writes leave the live path at once, through `writer.py`'s bounded queue. A stop asked of another worker is
published on the stop channel (sharded in a cluster), which every worker listens to, and the one reading the reply
stops it.

Liveness: each process renews its lease twice a second for 2 s. A follower that finds the reader's lease gone twice
in a row (a second apart: the reader may just be back from a Redis blip) ends with `stream_lost`, keeping the
events it has: about 4 s at most after a reader died without a word (SIGKILL, an OOM kill, a lost node). On a
clean stop the process writes out what it still holds, then gives its lease up. A stream id names its reader, so
a follower also learns `stream_lost` of a reply whose reader died before its first write reached Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from chatsse.background import Supervised
from chatsse.errors import ResumeUnavailable
from chatsse.redis import FAILURES, Client, pipeline
from chatsse.resume import keys
from chatsse.resume.follow import Follower, read_meta
from chatsse.resume.live import Followed, may_follow
from chatsse.resume.writer import WriteCounts, Writer

KEY_SECONDS = 600  # a reply's keys live this long past their last renewal (CHATSSE_RESUME_KEY_SECONDS)
QUEUE_BYTES = 32 * 1024 * 1024  # events waiting for Redis, at most (CHATSSE_RESUME_QUEUE_BYTES)
LEASE_RENEW_SECONDS = 0.5
WAS_SECONDS = 3600  # how long after a process died its streams' followers are told stream_lost, not 404
LEASE_MS = 2000  # four renewals: a reader stalled for 1.5 s (a long collector pause, a slow Redis) is not lost
FLUSH_SECONDS = 2.0  # on a clean stop, the longest spent writing out what is still queued


class RedisStore:
    """Writes this process's kept replies to Redis, and follows any process's kept replies from it."""

    def __init__(
        self,
        client: Client,
        idle_limit: float,
        counts: WriteCounts,
        cluster: bool = False,
        background_failed: Callable[[str], None] = lambda name: None,
        key_seconds: int = KEY_SECONDS,
        queue_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.background_failed = background_failed  # a loop of ours raised (counted; it is started again)
        self.client = client
        self.cluster = cluster
        self.idle_limit = idle_limit  # a reply silent this long is given up on by followers
        self.bucket = secrets.token_hex(1)  # the hash tag of every stream this process reads
        self.reader = secrets.token_hex(keys.READER_HEX // 2)  # this process, as its streams' ids and meta name it
        self.lease = keys.lease(self.bucket, self.reader)
        self.was = keys.was(self.bucket, self.reader)
        self.follower = Follower(client, idle_limit)
        self.writer = Writer(client, cluster, self.reader, key_seconds, queue_bytes, counts)
        self._writer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.supervised: list[Supervised] = []  # its background loops, for readiness
        self._closing = False

    def new_stream_id(self) -> str:
        """A stream id of this process's bucket and reader (keys.py): the reader and start second in it let a
        follower tell a reply whose reader died before its first write from no reply at all."""
        return keys.stream_id(self.bucket, self.reader, time.time(), secrets.token_hex(8))

    def start(self, on_stop: Callable[[str], Awaitable[object]] | None = None) -> None:
        """Start writing and renewing the lease; with `on_stop`, also hear the stops other workers are asked for."""
        failed = self.background_failed
        writer = Supervised("redis-writer", self.writer.run, failed)
        self.supervised = [writer, Supervised("redis-lease", self._renew_forever, failed)]
        if on_stop is not None:
            self.supervised.append(Supervised("redis-stops", partial(self._hear_stops, on_stop), failed))
        self._writer = writer.start()
        self._tasks += [loop.start() for loop in self.supervised[1:]]

    async def close(self) -> None:
        """Write out what is queued (the last events of the replies the drain ended), give the lease up, close."""
        # redis-py may swallow a cancellation that lands inside one of its calls: the loops also stop by themselves
        # once closing, and the wait for them is bounded.
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=LEASE_RENEW_SECONDS + 1.5)
        if self._writer is not None:
            self.writer.flush()
            await asyncio.wait([self._writer], timeout=FLUSH_SECONDS)  # not wait_for: it would wait for a cancel
            self._writer.cancel()
        with contextlib.suppress(*FAILURES):
            await self.client.delete(self.lease, self.was)  # one slot: both under the bucket's hash tag
        await self.client.aclose()

    async def request_stop(self, stream_id: str, owner: str | None) -> bool:
        """Ask whichever worker reads a reply to stop it; False if there is no such reply of `owner`'s being read."""
        try:
            meta = await read_meta(self.client, stream_id)
            if not meta or meta.get(b"ended") == b"1" or not may_follow(meta.get(b"owner", b"").decode(), owner):
                return False
            if self.cluster:  # a cluster's PUBLISH counts only the listeners on the node it reached
                listeners = await self.client.spublish(keys.STOP_CHANNEL, stream_id)
            else:
                listeners = await self.client.publish(keys.STOP_CHANNEL, stream_id)
        except FAILURES:
            raise ResumeUnavailable(retry_after=1) from None
        if not listeners:  # no worker hears stops right now (each listens again within a second when Redis is back)
            raise ResumeUnavailable(retry_after=1)
        return True

    async def _hear_stops(self, on_stop: Callable[[str], Awaitable[object]]) -> None:
        while not self._closing:
            pubsub: Any = self.client.pubsub()
            try:
                if self.cluster:
                    await pubsub.ssubscribe(keys.STOP_CHANNEL)
                else:
                    await pubsub.subscribe(keys.STOP_CHANNEL)
                while not self._closing:
                    if self.cluster:
                        message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
                    else:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message["type"] in ("message", "smessage"):
                        await on_stop(message["data"].decode())
            except FAILURES:
                await asyncio.sleep(1)  # lost: the writer counts and logs it; listen again when it is back
            finally:
                with contextlib.suppress(*FAILURES):
                    await pubsub.aclose()

    async def _renew_forever(self) -> None:
        while not self._closing:
            with contextlib.suppress(*FAILURES):  # the writer counts Redis's absence; followers judge the lease
                # Renewed with PEXPIRE, which a Redis out of memory still takes (SET it refuses): its followers
                # must not take a full Redis for a dead reader. SET only the first time, or after a lapse.
                async with pipeline(self.client) as pipe:
                    pipe.pexpire(self.lease, LEASE_MS)
                    pipe.expire(self.was, WAS_SECONDS)
                    renewed, _ = await pipe.execute()
                if not renewed:
                    async with pipeline(self.client) as pipe:
                        pipe.set(self.lease, 1, px=LEASE_MS)
                        pipe.set(self.was, 1, ex=WAS_SECONDS)
                        await pipe.execute()
            await asyncio.sleep(LEASE_RENEW_SECONDS)

    # Writing (never awaited on the live path) --------------------------------------------------------------
    def started(self, stream_id: str, owner: str | None, seconds: float, origin: str | None = None) -> None:
        self.writer.started(stream_id, owner, seconds, origin)

    def append(self, stream_id: str, seq: int, payloads: list[bytes], first_seq: int) -> None:
        self.writer.append(stream_id, seq, payloads, first_seq)

    def chat_started(self, chat_id: str, stream_id: str, seconds: float) -> None:
        self.writer.chat_started(chat_id, stream_id, seconds)

    def ended(self, stream_id: str, seconds: float) -> None:
        self.writer.ended(stream_id, seconds)

    # Reading: the follower's ------------------------------------------------------------------------------
    async def followed_elsewhere(self, stream_id: str) -> bool:
        return await self.follower.followed_elsewhere(stream_id)

    async def active_stream_of_chat(self, chat_id: str, owner: str | None) -> str | None:
        return await self.follower.active_stream_of_chat(chat_id, owner)

    async def follow(self, stream_id: str, owner: str | None, after: int, seconds: float) -> Followed:
        return await self.follower.follow(stream_id, owner, after, seconds)
