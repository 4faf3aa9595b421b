"""Kept replies copied to Redis Streams (standalone or a Redis Cluster), so a client can resume on any worker or
instance, and learns within seconds when the instance reading its reply died.

Keys, all expiring, and all of one stream under one hash tag (one cluster slot): `chatsse:{s:<b>}:<id>:e` (the
events: entry `0-<seq>`, field `e`, the event's `payload()` as JSON), `...:m` (owner, ended, reader),
`...:f` (set by followers on other workers, so the reading worker keeps the reply for them). `<b>` is the first
two hex digits of the stream id, which each process draws once for all the streams it reads: its writes go to one
slot, in one script call per cycle, as on a single Redis. `chatsse:c:<chat>` names a useChat chat's stream.

Writes leave the live path at once: they go through a queue to one writer task that sends what gathered in 10 ms
in one round trip, grouped per slot. A stop asked of another worker is published on the stop channel (sharded in
a cluster), which every worker listens to, and the one reading the reply stops it.

Liveness: each process renews its lease, `chatsse:{s:<b>}:alive:<reader>`, twice a second for 2 s. A follower that
finds the reader's lease gone twice in a row (a second apart: the reader may just be back from a Redis blip) ends
with `stream_lost`, keeping the events it has: about 4 s at most after a reader died without a word (SIGKILL, an
OOM kill, a lost node). On a clean stop the process writes out what it still holds, then gives its lease up.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from chatsse.errors import ChatSSEError, ResumeGap, ResumeUnavailable, StreamLost, StreamNotFound, UpstreamTimeout
from chatsse.events import ENDINGS, Batch, Failed, from_payload
from chatsse.redis import BLOCK_MS, FAILURES, Client, Reachability, run_script
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
STOP_CHANNEL = "chatsse:{stop}"
LEASE_RENEW_SECONDS = 0.5
LEASE_MS = 2000  # four renewals: a reader stalled for 1.5 s (a long collector pause, a slow Redis) is not lost
LOST_AFTER_MISSES = 2  # consecutive checks, BLOCK_MS apart, that found the reader's lease gone
FLUSH_SECONDS = 2.0  # on a clean stop, the longest spent writing out what is still queued
# Writes that failed (Redis lost, a cluster failing over) are sent again with the next cycle, up to this many: a
# blip of seconds costs followers nothing. Past it the oldest go, and a follower that reaches them gets resume_gap.
# How long a follower on another worker rides out Redis failing (a blip, a cluster's failover) before it gives up.
FOLLOW_PATIENCE_SECONDS = 5.0
MAX_UNSENT = 50_000  # seconds of a busy instance's writes (each item is a read's events), some MB


def tag(stream_id: str) -> str:
    """The prefix of every key of a stream: its hash tag is the bucket its id starts with."""
    return f"chatsse:{{s:{stream_id[:2]}}}:"


class RedisStore:
    """Writes this process's kept replies to Redis, and follows any process's kept replies from it."""

    def __init__(
        self, client: Client, idle_limit: float, on_failure: Callable[[], None], cluster: bool = False
    ) -> None:
        self._append_script = client.register_script(_APPEND)
        self.client = client
        self.cluster = cluster
        self.idle_limit = idle_limit  # a reply silent this long is given up on by followers
        self.bucket = secrets.token_hex(1)  # the hash tag of every stream this process reads
        self.reader = secrets.token_hex(8)  # this process, as its streams' meta names it
        self.lease = f"{tag(self.bucket)}alive:{self.reader}"
        self.reachability = Reachability(
            "Redis unreachable (%s): resumes on other workers fail until it returns",
            "Redis is back: kept replies are shared again",
            on_failure,
        )
        self._queue: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._unsent: list[tuple[str, tuple[Any, ...]]] = []

    def new_stream_id(self) -> str:
        """A stream id of this process's bucket; 120 random bits after it, so it still cannot be guessed."""
        return self.bucket + secrets.token_hex(15)

    def start(self, on_stop: Callable[[str], Awaitable[object]] | None = None) -> None:
        """Start writing and renewing the lease; with `on_stop`, also hear the stops other workers are asked for."""
        self._writer = asyncio.create_task(self._write_forever(), name="chatsse-redis-writer")
        self._tasks.append(asyncio.create_task(self._renew_forever(), name="chatsse-redis-lease"))
        if on_stop is not None:
            self._tasks.append(asyncio.create_task(self._hear_stops(on_stop), name="chatsse-redis-stops"))

    async def close(self) -> None:
        """Write out what is queued (the last events of the replies the drain ended), give the lease up, close."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._writer is not None:
            self._queue.put_nowait(("flush", ()))
            try:
                await asyncio.wait_for(self._writer, FLUSH_SECONDS)
            except (TimeoutError, asyncio.CancelledError):
                pass
        with contextlib.suppress(*FAILURES):
            await self.client.delete(self.lease)
        await self.client.aclose()

    async def request_stop(self, stream_id: str, owner: str | None) -> bool:
        """Ask whichever worker reads a reply to stop it; False if there is no such reply of `owner`'s being read."""
        try:
            meta = await self._meta(stream_id)
            if not meta or meta.get(b"ended") == b"1" or not may_follow(meta.get(b"owner", b"").decode(), owner):
                return False
            if self.cluster:  # a cluster's PUBLISH counts only the listeners on the node it reached
                listeners = await self.client.spublish(STOP_CHANNEL, stream_id)
            else:
                listeners = await self.client.publish(STOP_CHANNEL, stream_id)
        except FAILURES:
            raise ResumeUnavailable(retry_after=1) from None
        if not listeners:  # no worker hears stops right now (each listens again within a second when Redis is back)
            raise ResumeUnavailable(retry_after=1)
        return True

    async def _meta(self, stream_id: str) -> Any:
        meta: Any = await self.client.hgetall(f"{tag(stream_id)}{stream_id}:m")
        if not meta:  # perhaps started an instant ago, and still in its worker's write queue
            await asyncio.sleep(3 * WRITE_INTERVAL_SECONDS)
            meta = await self.client.hgetall(f"{tag(stream_id)}{stream_id}:m")
        return meta

    async def _hear_stops(self, on_stop: Callable[[str], Awaitable[object]]) -> None:
        while True:
            pubsub: Any = self.client.pubsub()
            try:
                if self.cluster:
                    await pubsub.ssubscribe(STOP_CHANNEL)
                else:
                    await pubsub.subscribe(STOP_CHANNEL)
                while True:
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
        while True:
            with contextlib.suppress(*FAILURES):  # the writer counts Redis's absence; followers judge the lease
                await self.client.set(self.lease, 1, px=LEASE_MS)
            await asyncio.sleep(LEASE_RENEW_SECONDS)

    # Writing (never awaited on the live path) --------------------------------------------------------------
    def started(self, stream_id: str, owner: str | None, seconds: float) -> None:
        self._queue.put_nowait(("started", (stream_id, owner or "", seconds)))

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
        pipe = self.client.pipeline(transaction=False)
        appended: dict[str, tuple[list[tuple[int, bytes]], int]] = {}
        for kind, args in items:
            if kind == "append":
                stream_id, events, first_seq = args
                earlier = appended.get(stream_id)
                appended[stream_id] = ((earlier[0] if earlier else []) + events, first_seq)
            elif kind == "started":
                self._queue_started(pipe, *args)
            elif kind == "chat":
                chat_id, stream_id, seconds = args
                pipe.set(f"chatsse:c:{chat_id}", stream_id, ex=LIVE_TTL_SECONDS + int(seconds) + 1)
            elif kind == "ended":
                self._queue_ended(pipe, *args)
        by_slot: dict[str, dict[str, tuple[list[tuple[int, bytes]], int]]] = {}
        for stream_id, appends in appended.items():
            by_slot.setdefault(tag(stream_id) if self.cluster else "", {})[stream_id] = appends
        for streams in by_slot.values():
            await self._queue_appends(pipe, streams)
        if not pipe:  # a flush with nothing left to write
            return True
        try:
            await pipe.execute()
        except FAILURES as exc:
            self.reachability.failed(exc, len(items))
            return False
        self.reachability.answered()
        return True

    def _queue_started(self, pipe: Any, stream_id: str, owner: str, seconds: float) -> None:
        meta = f"{tag(stream_id)}{stream_id}:m"
        pipe.hset(meta, mapping={"owner": owner, "ended": 0, "reader": self.reader})
        pipe.expire(meta, LIVE_TTL_SECONDS + int(seconds) + 1)

    async def _queue_appends(self, pipe: Any, appended: dict[str, tuple[list[tuple[int, bytes]], int]]) -> None:
        """One script call for the streams of one slot (in a cluster; all of them on a single Redis)."""
        keys: list[str] = []
        args: list[int | str | bytes] = [LIVE_TTL_SECONDS]
        for stream_id, (events, first_seq) in appended.items():
            keys.append(f"{tag(stream_id)}{stream_id}:e")
            args += [len(events), f"0-{first_seq}" if first_seq > 1 else ""]
            for seq, payload in events:
                args += [f"0-{seq}", payload]
        await run_script(pipe, self._append_script, keys, args, self.cluster)

    @staticmethod
    def _queue_ended(pipe: Any, stream_id: str, seconds: float) -> None:
        prefix = f"{tag(stream_id)}{stream_id}"
        pipe.hset(f"{prefix}:m", "ended", 1)
        for key in (f"{prefix}:e", f"{prefix}:m"):
            pipe.expire(key, int(seconds) + 1)

    # Reading ------------------------------------------------------------------------------------------------
    async def followed_elsewhere(self, stream_id: str) -> bool:
        try:
            return bool(await self.client.exists(f"{tag(stream_id)}{stream_id}:f"))
        except FAILURES:
            return False

    async def active_stream_of_chat(self, chat_id: str, owner: str | None) -> str | None:
        try:
            found: Any = await self.client.get(f"chatsse:c:{chat_id}")
            if found is None:
                return None
            stream_id = found.decode()
            meta: Any = await self.client.hgetall(f"{tag(stream_id)}{stream_id}:m")
        except FAILURES:
            raise ResumeUnavailable(retry_after=1) from None
        if not meta or meta.get(b"ended") == b"1" or not may_follow(meta.get(b"owner", b"").decode(), owner):
            return None
        return str(stream_id)

    async def follow(self, stream_id: str, owner: str | None, after: int, seconds: float) -> AsyncIterator[Batch]:
        """Check the stream (404, 410, 503 before any byte), then follow it from Redis."""
        try:
            meta = await self._meta(stream_id)
            if not meta or not may_follow(meta.get(b"owner", b"").decode(), owner):
                raise StreamNotFound()
            oldest: Any = await self.client.xrange(f"{tag(stream_id)}{stream_id}:e", count=1)
        except FAILURES:
            raise ResumeUnavailable(retry_after=1) from None
        if oldest and int(oldest[0][0].split(b"-")[1]) > after + 1:
            raise ResumeGap()
        return self._tail(stream_id, after, seconds)

    async def _tail(self, stream_id: str, after: int, seconds: float) -> AsyncIterator[Batch]:
        prefix = f"{tag(stream_id)}{stream_id}"
        key, idle, misses = f"{prefix}:e", 0.0, 0
        last: Any = f"0-{after}"
        failing_since: float | None = None
        while True:
            try:
                await self.client.set(f"{prefix}:f", 1, ex=max(1, int(seconds)))
                found: Any = await self.client.xread({key: last}, block=BLOCK_MS, count=1000)
                if not found:
                    kept, alive = await self._reader_alive(stream_id)
            except FAILURES:
                # A blip or a cluster failing over: the reply goes on, and its reader writes what it could not.
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > FOLLOW_PATIENCE_SECONDS:
                    yield _failed(ResumeUnavailable())
                    return
                await asyncio.sleep(0.25)
                continue
            failing_since = None
            if not found:
                idle += BLOCK_MS / 1000
                misses = 0 if alive else misses + 1
                if not kept:
                    yield _failed(StreamNotFound())
                    return
                if misses >= LOST_AFTER_MISSES:
                    yield _failed(StreamLost())
                    return
                if idle > self.idle_limit:
                    yield _failed(UpstreamTimeout())
                    return
                continue
            idle, misses = 0.0, 0
            entries = found[0][1]
            last = entries[-1][0]
            for batch in _batches(entries):
                if batch.first_seq != after + 1:  # events this follower has not had are gone (trimmed, lost)
                    yield _failed(ResumeGap())
                    return
                after += len(batch.events)
                yield batch
                if isinstance(batch.events[-1], ENDINGS):
                    return

    async def _reader_alive(self, stream_id: str) -> tuple[bool, bool]:
        """Whether the stream is still kept, and whether someone can still finish it: its reader holds its lease.
        A reply marked ended whose last event a follower never got (its reader was stopped mid-write) has no one."""
        prefix = f"{tag(stream_id)}{stream_id}"
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(f"{prefix}:e", f"{prefix}:m")
        pipe.hmget(f"{prefix}:m", "ended", "reader")
        kept, (ended, reader) = await pipe.execute()
        if not kept:
            return False, False
        if ended == b"1":
            return True, False
        if not reader:
            return True, True
        return True, bool(await self.client.exists(f"{tag(stream_id)}alive:{reader.decode()}"))


def _failed(error: ChatSSEError) -> Batch:
    return Batch([Failed.of(error)])


def _batches(entries: list[Any]) -> list[Batch]:
    """Stream entries as batches of consecutive sequence numbers (a jump starts a new one)."""
    batches: list[Batch] = []
    expected = 0
    for entry_id, fields in entries:
        seq = int(entry_id.split(b"-")[1])
        event = from_payload(orjson.loads(fields[b"e"]))
        if seq == expected:
            batches[-1].events.append(event)
        else:
            batches.append(Batch([event], seq))
        expected = seq + 1
    return batches
