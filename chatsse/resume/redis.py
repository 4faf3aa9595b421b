"""Kept replies copied to Redis Streams (standalone or a Redis Cluster), so a client can resume on any worker or
instance (`follow.py`), and learns within seconds when the instance reading its reply died.

The keys, all expiring, are `keys.py`'s: a stream's share one hash tag, the bucket its id starts with, which each
process draws once for all the streams it reads: its writes go to one slot, in one script call per cycle, as on a
single Redis.

Writes leave the live path at once: they go through a queue to one writer task that sends what gathered in 10 ms
in one round trip, grouped per slot. A stop asked of another worker is published on the stop channel (sharded in
a cluster), which every worker listens to, and the one reading the reply stops it.

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
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from chatsse.background import Supervised
from chatsse.errors import ResumeUnavailable
from chatsse.events import Batch
from chatsse.redis import FAILURES, Client, Reachability, pipeline, run_script
from chatsse.resume import keys
from chatsse.resume.follow import Follower, read_meta
from chatsse.resume.live import may_follow

# Every event of one writer cycle for the streams of one slot, in one call: redis-py's cost per command (not
# Redis's) is what a pipeline of one XADD per token would pay thousands of times a second. ARGV: ttl, then per key:
# the count of events, the MINID to trim to ("" for none), then (entry id, encoded event) pairs. Sending a cycle
# again after a failure is harmless: an entry already there is refused by XADD (its id is not above the top), and
# pcall skips it.
_APPEND = """
local ttl, i = ARGV[1], 2
for k = 1, #KEYS do
  local n, minid = tonumber(ARGV[i]), ARGV[i + 1]
  i = i + 2
  for _ = 1, n do
    if minid == '' then
      redis.pcall('XADD', KEYS[k], ARGV[i], 'e', ARGV[i + 1])
    else
      redis.pcall('XADD', KEYS[k], 'MINID', minid, ARGV[i], 'e', ARGV[i + 1])
    end
    i = i + 2
  end
  redis.call('EXPIRE', KEYS[k], ttl)
end
return 0
"""
LIVE_TTL_SECONDS = 600
# The writer gathers events this long before sending them: under load that is one call for hundreds of events
# instead of one per token, and a follower on another worker sees them at most this much later.
WRITE_INTERVAL_SECONDS = 0.01  # while a reply is being read; the resume window starts when it ends
LEASE_RENEW_SECONDS = 0.5
WAS_SECONDS = 3600  # how long after a process died its streams' followers are told stream_lost, not 404
LEASE_MS = 2000  # four renewals: a reader stalled for 1.5 s (a long collector pause, a slow Redis) is not lost
FLUSH_SECONDS = 2.0  # on a clean stop, the longest spent writing out what is still queued
# Writes that failed (Redis lost, a cluster failing over) are sent again with the next cycle, up to this many: a
# blip of seconds costs followers nothing. Past it the oldest go, and a follower that reaches them gets resume_gap.
MAX_UNSENT = 50_000  # seconds of a busy instance's writes (each item is a read's events), some MB


class RedisStore:
    """Writes this process's kept replies to Redis, and follows any process's kept replies from it."""

    def __init__(
        self,
        client: Client,
        idle_limit: float,
        on_failure: Callable[[], None],
        cluster: bool = False,
        background_failed: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.background_failed = background_failed  # a loop of ours raised (counted; it is started again)
        self._append_script = client.register_script(_APPEND)
        self.client = client
        self.cluster = cluster
        self.idle_limit = idle_limit  # a reply silent this long is given up on by followers
        self.bucket = secrets.token_hex(1)  # the hash tag of every stream this process reads
        self.reader = secrets.token_hex(keys.READER_HEX // 2)  # this process, as its streams' ids and meta name it
        self.lease = keys.lease(self.bucket, self.reader)
        self.was = keys.was(self.bucket, self.reader)
        self.follower = Follower(client, idle_limit)
        self.reachability = Reachability(
            "Redis unreachable (%s): resumes on other workers fail until it returns",
            "Redis is back: kept replies are shared again",
            on_failure,
        )
        self._queue: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._unsent: list[tuple[str, tuple[Any, ...]]] = []

    def new_stream_id(self) -> str:
        """A stream id of this process's bucket and reader (keys.py): the reader and start second in it let a
        follower tell a reply whose reader died before its first write from no reply at all."""
        return keys.stream_id(self.bucket, self.reader, time.time(), secrets.token_hex(8))

    def start(self, on_stop: Callable[[str], Awaitable[object]] | None = None) -> None:
        """Start writing and renewing the lease; with `on_stop`, also hear the stops other workers are asked for."""
        failed = self.background_failed
        self._writer = Supervised("redis-writer", self._write_forever, failed).start()
        self._tasks.append(Supervised("redis-lease", self._renew_forever, failed).start())
        if on_stop is not None:
            self._tasks.append(Supervised("redis-stops", partial(self._hear_stops, on_stop), failed).start())

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
            self._queue.put_nowait(("flush", ()))
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
                async with pipeline(self.client) as pipe:
                    pipe.set(self.lease, 1, px=LEASE_MS)
                    pipe.set(self.was, 1, ex=WAS_SECONDS)
                    await pipe.execute()
            await asyncio.sleep(LEASE_RENEW_SECONDS)

    # Writing (never awaited on the live path) --------------------------------------------------------------
    def started(self, stream_id: str, owner: str | None, seconds: float, origin: str | None = None) -> None:
        self._queue.put_nowait(("started", (stream_id, owner or "", seconds, origin or "")))

    def append(self, stream_id: str, seq: int, payloads: list[bytes], first_seq: int) -> None:
        """Keep `payloads` (encoded events numbered from `seq`); events before `first_seq` may go."""
        if payloads:
            events = [(seq + n, payload) for n, payload in enumerate(payloads)]
            self._queue.put_nowait(("append", (stream_id, events, first_seq)))

    def chat_started(self, chat_id: str, stream_id: str, seconds: float) -> None:
        self._queue.put_nowait(("chat", (chat_id, stream_id, seconds)))

    def ended(self, stream_id: str, seconds: float) -> None:
        self._queue.put_nowait(("ended", (stream_id, seconds)))

    async def _write_forever(self) -> None:
        while True:
            if self._unsent:  # Redis failed last time: try again with what came since, a little later
                items, self._unsent = self._unsent, []
                await asyncio.sleep(0.1)
            else:
                items = [await self._queue.get()]
                await asyncio.sleep(WRITE_INTERVAL_SECONDS)
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            flush = any(kind == "flush" for kind, _ in items)
            if not await self._write(items):
                self._unsent = items[-MAX_UNSENT:]
            if flush:
                return

    async def _write(self, items: list[tuple[str, tuple[Any, ...]]]) -> bool:
        """Send `items` in one round trip; False if Redis failed them (they may be sent again as they are)."""
        async with pipeline(self.client) as pipe:
            appended: dict[str, tuple[list[tuple[int, bytes]], int]] = {}
            ended: list[tuple[str, float]] = []
            for kind, args in items:
                if kind == "append":
                    stream_id, events, first_seq = args
                    earlier = appended.get(stream_id)
                    appended[stream_id] = ((earlier[0] if earlier else []) + events, first_seq)
                elif kind == "started":
                    self._queue_started(pipe, *args)
                elif kind == "chat":
                    chat_id, stream_id, seconds = args
                    pipe.set(keys.chat(chat_id), stream_id, ex=LIVE_TTL_SECONDS + int(seconds) + 1)
                elif kind == "ended":
                    ended.append(args)
            by_slot: dict[str, dict[str, tuple[list[tuple[int, bytes]], int]]] = {}
            for stream_id, appends in appended.items():
                by_slot.setdefault(keys.tag(stream_id) if self.cluster else "", {})[stream_id] = appends
            for streams in by_slot.values():
                await self._queue_appends(pipe, streams)
            for args in ended:  # after the appends: a reply's end sets its keys' last lifetime, not the append script
                self._queue_ended(pipe, *args)
            if not pipe:  # a flush with nothing left to write
                return True
            try:
                await pipe.execute()
            except FAILURES as exc:
                self.reachability.failed(exc)
                return False
            self.reachability.answered()
            return True

    def _queue_started(self, pipe: Any, stream_id: str, owner: str, seconds: float, origin: str) -> None:
        meta = keys.meta(stream_id)
        pipe.hset(meta, mapping={"owner": owner, "ended": 0, "reader": self.reader, "origin": origin})
        pipe.expire(meta, LIVE_TTL_SECONDS + int(seconds) + 1)

    async def _queue_appends(self, pipe: Any, appended: dict[str, tuple[list[tuple[int, bytes]], int]]) -> None:
        """One script call for the streams of one slot (in a cluster; all of them on a single Redis)."""
        stream_keys: list[str] = []
        args: list[int | str | bytes] = [LIVE_TTL_SECONDS]
        for stream_id, (events, first_seq) in appended.items():
            stream_keys.append(keys.events(stream_id))
            args += [len(events), f"0-{first_seq}" if first_seq > 1 else ""]
            for seq, payload in events:
                args += [f"0-{seq}", payload]
        await run_script(pipe, self._append_script, stream_keys, args, self.cluster)

    @staticmethod
    def _queue_ended(pipe: Any, stream_id: str, seconds: float) -> None:
        pipe.hset(keys.meta(stream_id), "ended", 1)
        for key in (keys.events(stream_id), keys.meta(stream_id)):
            pipe.expire(key, int(seconds) + 1)

    # Reading: the follower's ------------------------------------------------------------------------------
    async def followed_elsewhere(self, stream_id: str) -> bool:
        return await self.follower.followed_elsewhere(stream_id)

    async def active_stream_of_chat(self, chat_id: str, owner: str | None) -> str | None:
        return await self.follower.active_stream_of_chat(chat_id, owner)

    async def follow(self, stream_id: str, owner: str | None, after: int, seconds: float) -> AsyncIterator[Batch]:
        return await self.follower.follow(stream_id, owner, after, seconds)
