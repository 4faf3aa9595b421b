"""Following a kept reply on Redis, from any worker or instance: the events after a sequence, then the live rest to
its last event; or what became of it: `stream_lost` when its reader's lease lapsed (twice, a second apart),
`resume_gap` when events it has not had are gone (trimmed, or never written: `writer.py`), `resume_unavailable`
after 5 s of Redis failing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from chatsse.errors import ChatSSEError, ResumeGap, ResumeUnavailable, StreamLost, StreamNotFound, UpstreamTimeout
from chatsse.events import ENDINGS, Batch, Failed, from_payload
from chatsse.redis import BLOCK_MS, FAILURES, Client, pipeline
from chatsse.resume import keys
from chatsse.resume.live import Followed, may_follow

FRESH_SECONDS = 10  # a stream this young with no trace on Redis may still be in its reader's first write
LOST_AFTER_MISSES = 2  # consecutive checks, BLOCK_MS apart, that found the reader's lease gone
# How long a follower on another worker rides out Redis failing (a blip, a cluster's failover) before it gives up.
FOLLOW_PATIENCE_SECONDS = 5.0
META_WAIT_SECONDS = 0.03  # three of the writer's cycles: a stream started an instant ago may still be queued


async def read_meta(client: Client, stream_id: str) -> Any:
    """A stream's meta (owner, ended, reader); empty if there is no such stream."""
    meta: Any = await client.hgetall(keys.meta(stream_id))
    if not meta:  # perhaps started an instant ago, and still in its worker's write queue
        await asyncio.sleep(META_WAIT_SECONDS)
        meta = await client.hgetall(keys.meta(stream_id))
    return meta


class Follower:
    """Follows kept replies from Redis for the clients of this process."""

    def __init__(self, client: Client, idle_limit: float) -> None:
        self.client = client
        self.idle_limit = idle_limit  # a reply silent this long is given up on by followers

    async def followed_elsewhere(self, stream_id: str) -> bool:
        try:
            return bool(await self.client.exists(keys.followed(stream_id)))
        except FAILURES:
            return False

    async def active_stream_of_chat(self, chat_id: str, owner: str | None) -> str | None:
        try:
            found: Any = await self.client.get(keys.chat(chat_id))
            if found is None:
                return None
            stream_id = found.decode()
            meta: Any = await self.client.hgetall(keys.meta(stream_id))
        except FAILURES:
            raise ResumeUnavailable(retry_after=1) from None
        if not meta or meta.get(b"ended") == b"1" or not may_follow(meta.get(b"owner", b"").decode(), owner):
            return None
        return str(stream_id)

    async def follow(self, stream_id: str, owner: str | None, after: int, seconds: float) -> Followed:
        """Check the stream (404, 410, 503 before any byte), then follow it from Redis."""
        try:
            meta = await read_meta(self.client, stream_id)
            if not meta:
                if await self._reader_died(stream_id):
                    return Followed(_lost(), None)  # its reader died before it wrote the reply's start
                meta = await self.client.hgetall(keys.meta(stream_id))
            if not meta or not may_follow(meta.get(b"owner", b"").decode(), owner):
                raise StreamNotFound()
            origin = meta.get(b"origin", b"").decode() or None
            oldest: Any = await self.client.xrange(keys.events(stream_id), count=1)
        except FAILURES:
            raise ResumeUnavailable(retry_after=1) from None
        if oldest and int(oldest[0][0].split(b"-")[1]) > after + 1:
            raise ResumeGap()
        return Followed(self._tail(stream_id, after, seconds), origin)

    async def _tail(self, stream_id: str, after: int, seconds: float) -> AsyncIterator[Batch]:
        key, idle, misses = keys.events(stream_id), 0.0, 0
        last: Any = f"0-{after}"
        failing_since: float | None = None
        while True:
            try:
                await self.client.set(keys.followed(stream_id), 1, ex=max(1, int(seconds)))
                found: Any = await self.client.xread({key: last}, block=BLOCK_MS, count=1000)
                if not found:
                    standing = await self._standing(stream_id)
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
                misses = 0 if standing == "read" else misses + 1
                if standing in ("gone", "gap"):  # expired; or ended having lost events this follower waits for
                    yield _failed(StreamNotFound() if standing == "gone" else ResumeGap())
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

    async def _reader_died(self, stream_id: str) -> bool:
        """The stream has no trace on Redis because its reader died before writing it: the process its id names ran
        lately, stopped without a clean stop, and had started the stream just before. A stream started moments ago
        whose reader still holds its lease is waited for: it is written, or the lease lapses (within about 3 s).
        An older one expired: 404, at once."""
        reader, misses = keys.reader_of(stream_id), 0
        while True:
            async with pipeline(self.client) as pipe:
                pipe.exists(keys.lease(stream_id, reader))
                pipe.exists(keys.was(stream_id, reader))
                pipe.exists(keys.meta(stream_id))
                alive, was, written = await pipe.execute()
            if written or not was:
                return False
            if keys.age_of(stream_id, time.time()) > FRESH_SECONDS:  # long since started: it expired (404)
                return False
            if not alive:  # twice a second apart, as for a stream under way: the reader may be back from a blip
                misses += 1
                if misses >= LOST_AFTER_MISSES:
                    return True
                await asyncio.sleep(1)
                continue
            await asyncio.sleep(0.25)

    async def _standing(self, stream_id: str) -> str:
        """What became of a stream a follower waits on: "gone" (expired), "gap" (it ended, but its reader could not
        write all its events), "read" (its reader holds its lease: someone can still finish it), or "orphaned" (its
        reader's lease lapsed, or it ended with a last event this follower never got: stopped mid-write)."""
        async with pipeline(self.client) as pipe:
            pipe.exists(keys.events(stream_id), keys.meta(stream_id))
            pipe.hmget(keys.meta(stream_id), "ended", "reader", "gap")
            kept, (ended, reader, gap) = await pipe.execute()
        if not kept:
            return "gone"
        if ended == b"1":
            return "gap" if gap == b"1" else "orphaned"
        if not reader or await self.client.exists(keys.lease(stream_id, reader.decode())):
            return "read"
        return "orphaned"


async def _lost() -> AsyncIterator[Batch]:
    yield _failed(StreamLost())


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
