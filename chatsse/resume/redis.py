"""Kept replies copied to Redis Streams, so a client can resume on any worker or instance.

Keys, all expiring: `chatsse:s:<id>` (the events: entry `0-<seq>`, field `e`, the event's `payload()` as JSON),
`chatsse:m:<id>` (owner, ended), `chatsse:f:<id>` (set by followers on other workers, so the reading worker keeps
the reply for them). Writes leave the live path at once: they go through a queue to one writer task that sends
what gathered in 10 ms in one call. A stop asked of another worker is published on `chatsse:stop`, which every
worker listens to, and the one reading the reply stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from chatsse.errors import ChatSSEError, ResumeGap, ResumeUnavailable, StreamNotFound, UpstreamTimeout
from chatsse.events import ENDINGS, Batch, Failed, from_payload
from chatsse.redis import BLOCK_MS, Reachability
from chatsse.resume.live import may_follow

# Every event of one writer cycle, for every stream, in one call: redis-py's cost per command (not Redis's) is
# what a pipeline of one XADD per token would pay thousands of times a second. ARGV: ttl, then per key: the
# count of events, the MINID to trim to ("" for none), then (entry id, encoded event) pairs.
_APPEND = """
local ttl, i = ARGV[1], 2
for k = 1, #KEYS do
  local n, minid = tonumber(ARGV[i]), ARGV[i + 1]
  i = i + 2
  for _ = 1, n do
    if minid == '' then
      redis.call('XADD', KEYS[k], ARGV[i], 'e', ARGV[i + 1])
    else
      redis.call('XADD', KEYS[k], 'MINID', minid, ARGV[i], 'e', ARGV[i + 1])
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
STOP_CHANNEL = "chatsse:stop"


class RedisStore:
    """Writes this process's kept replies to Redis, and follows any process's kept replies from it."""

    def __init__(self, client: redis.Redis, idle_limit: float, on_failure: Callable[[], None]) -> None:
        self._append_script = client.register_script(_APPEND)
        self.client = client
        self.idle_limit = idle_limit  # a reply silent this long is given up on by followers
        self.reachability = Reachability(
            "Redis unreachable (%s): resumes on other workers fail until it returns",
            "Redis is back: kept replies are shared again",
            on_failure,
        )
        self._queue: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, on_stop: Callable[[str], Awaitable[object]] | None = None) -> None:
        """Start writing; with `on_stop`, also hear the stops other workers are asked for."""
        self._tasks.append(asyncio.create_task(self._write_forever(), name="chatsse-redis-writer"))
        if on_stop is not None:
            self._tasks.append(asyncio.create_task(self._hear_stops(on_stop), name="chatsse-redis-stops"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.aclose()

    async def request_stop(self, stream_id: str, owner: str | None) -> bool:
        """Ask whichever worker reads a reply to stop it; False if there is no such reply of `owner`'s being read."""
        try:
            meta = await self._meta(stream_id)
            if not meta or meta.get(b"ended") == b"1" or not may_follow(meta.get(b"owner", b"").decode(), owner):
                return False
            listeners = await self.client.publish(STOP_CHANNEL, stream_id)
        except (RedisError, OSError):
            raise ResumeUnavailable(retry_after=1) from None
        if not listeners:  # no worker hears stops right now (each listens again within a second when Redis is back)
            raise ResumeUnavailable(retry_after=1)
        return True

    async def _meta(self, stream_id: str) -> Any:
        meta: Any = await self.client.hgetall(f"chatsse:m:{stream_id}")
        if not meta:  # perhaps started an instant ago, and still in its worker's write queue
            await asyncio.sleep(3 * WRITE_INTERVAL_SECONDS)
            meta = await self.client.hgetall(f"chatsse:m:{stream_id}")
        return meta

    async def _hear_stops(self, on_stop: Callable[[str], Awaitable[object]]) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(STOP_CHANNEL)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        await on_stop(message["data"].decode())
            except (RedisError, OSError):
                await asyncio.sleep(1)  # lost: the writer counts and logs it; listen again when it is back
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

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
            items = [await self._queue.get()]
            await asyncio.sleep(WRITE_INTERVAL_SECONDS)
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
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
                else:
                    self._queue_ended(pipe, *args)
            if appended:
                await self._queue_appends(pipe, appended)
            try:
                await pipe.execute()
            except (RedisError, OSError) as exc:
                self.reachability.failed(exc, len(items))
                continue
            self.reachability.answered()

    @staticmethod
    def _queue_started(pipe: Any, stream_id: str, owner: str, seconds: float) -> None:
        meta = f"chatsse:m:{stream_id}"
        pipe.hset(meta, mapping={"owner": owner, "ended": 0})
        pipe.expire(meta, LIVE_TTL_SECONDS + int(seconds) + 1)

    async def _queue_appends(self, pipe: Any, appended: dict[str, tuple[list[tuple[int, bytes]], int]]) -> None:
        keys: list[str] = []
        args: list[int | str | bytes] = [LIVE_TTL_SECONDS]
        for stream_id, (events, first_seq) in appended.items():
            keys.append(f"chatsse:s:{stream_id}")
            args += [len(events), f"0-{first_seq}" if first_seq > 1 else ""]
            for seq, payload in events:
                args += [f"0-{seq}", payload]
        await self._append_script(keys=keys, args=args, client=pipe)

    @staticmethod
    def _queue_ended(pipe: Any, stream_id: str, seconds: float) -> None:
        pipe.hset(f"chatsse:m:{stream_id}", "ended", 1)
        for key in (f"chatsse:s:{stream_id}", f"chatsse:m:{stream_id}"):
            pipe.expire(key, int(seconds) + 1)

    # Reading ------------------------------------------------------------------------------------------------
    async def followed_elsewhere(self, stream_id: str) -> bool:
        try:
            return bool(await self.client.exists(f"chatsse:f:{stream_id}"))
        except (RedisError, OSError):
            return False

    async def active_stream_of_chat(self, chat_id: str, owner: str | None) -> str | None:
        try:
            stream_id: Any = await self.client.get(f"chatsse:c:{chat_id}")
            if stream_id is None:
                return None
            meta: Any = await self.client.hgetall(f"chatsse:m:{stream_id.decode()}")
        except (RedisError, OSError):
            raise ResumeUnavailable(retry_after=1) from None
        if not meta or meta.get(b"ended") == b"1" or not may_follow(meta.get(b"owner", b"").decode(), owner):
            return None
        return str(stream_id.decode())

    async def follow(self, stream_id: str, owner: str | None, after: int, seconds: float) -> AsyncIterator[Batch]:
        """Check the stream (404, 410, 503 before any byte), then follow it from Redis."""
        try:
            meta = await self._meta(stream_id)
            if not meta or not may_follow(meta.get(b"owner", b"").decode(), owner):
                raise StreamNotFound()
            oldest: Any = await self.client.xrange(f"chatsse:s:{stream_id}", count=1)
        except (RedisError, OSError):
            raise ResumeUnavailable(retry_after=1) from None
        if oldest and int(oldest[0][0].split(b"-")[1]) > after + 1:
            raise ResumeGap()
        return self._tail(stream_id, after, seconds)

    async def _tail(self, stream_id: str, after: int, seconds: float) -> AsyncIterator[Batch]:
        key, idle = f"chatsse:s:{stream_id}", 0.0
        last: Any = f"0-{after}"
        try:
            while True:
                await self.client.set(f"chatsse:f:{stream_id}", 1, ex=max(1, int(seconds)))
                found: Any = await self.client.xread({key: last}, block=BLOCK_MS, count=1000)
                if not found:
                    idle += BLOCK_MS / 1000
                    if not await self.client.exists(key, f"chatsse:m:{stream_id}"):
                        yield _failed(StreamNotFound())
                        return
                    if idle > self.idle_limit:
                        yield _failed(UpstreamTimeout())
                        return
                    continue
                idle = 0.0
                entries = found[0][1]
                last = entries[-1][0]
                for batch in _batches(entries):
                    yield batch
                if isinstance(batch.events[-1], ENDINGS):
                    return
        except (RedisError, OSError):
            yield _failed(ResumeUnavailable())


def _failed(error: ChatSSEError) -> Batch:
    return Batch([Failed.of(error)])


def _batches(entries: list[Any]) -> list[Batch]:
    """Stream entries as batches of consecutive sequence numbers (a trim between two reads leaves a jump)."""
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
