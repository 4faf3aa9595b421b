"""The write-behind queue of one process's kept replies to Redis: bounded in bytes, sent by one task in one pipeline
per cycle, renewing the keys of the replies still being read, and counting what Redis failed or refused.

- Writes leave the live path at once; what gathered in 10 ms goes in one round trip. Redis lost or failing over:
  a cycle is sent again, with what came since, until it answers.
- The queue holds at most `max_bytes` of events (`CHATSSE_RESUME_QUEUE_BYTES`, `chatsse_resume_queue_bytes`). Past
  it, new events are shed (`chatsse_resume_events_shed_total`), and the later events of a reply that lost one
  (nobody can read past the hole); a reply's start, chat and end records never are.
- A write Redis refuses (out of memory, a wrong type) is counted (`chatsse_resume_writes_refused_total`), logged
  once per burst, not sent again. A reply that lost events either way is marked `gap` when it ends: its followers
  get `resume_gap` rather than wait for events that will never come.
- A reply's keys first live `key_seconds` plus the resume window, renewed every third of `key_seconds` while it is
  read: a long reply stays followable to its end, and the keys of a reader that died go within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from chatsse.redis import FAILURES, Client, Reachability, pipeline, run_script
from chatsse.resume import keys

log = logging.getLogger("chatsse")

# Every event of one writer cycle for the streams of one slot, in one call: redis-py's cost per command (not
# Redis's) is what a pipeline of one XADD per token would pay thousands of times a second. ARGV: ttl, then per key:
# the count of events, the MINID to trim to ("" for none), then (entry id, encoded event) pairs. Sending a cycle
# again after a failure is harmless: an entry already there is refused by XADD as "equal or smaller" and skipped.
# Any other refusal (out of memory, a wrong type) comes back as the script's error, after the rest was tried.
_APPEND = """
local ttl, i, refused, first = ARGV[1], 2, 0, nil
for k = 1, #KEYS do
  local n, minid = tonumber(ARGV[i]), ARGV[i + 1]
  i = i + 2
  for _ = 1, n do
    local r
    if minid == '' then
      r = redis.pcall('XADD', KEYS[k], ARGV[i], 'e', ARGV[i + 1])
    else
      r = redis.pcall('XADD', KEYS[k], 'MINID', minid, ARGV[i], 'e', ARGV[i + 1])
    end
    if type(r) == 'table' and r.err and not string.find(r.err, 'equal or smaller', 1, true) then
      refused = refused + 1
      first = first or r.err
    end
    i = i + 2
  end
  redis.call('EXPIRE', KEYS[k], ttl)
end
if refused > 0 then
  return redis.error_reply(first .. ' (' .. refused .. ' events refused)')
end
return 0
"""
# The writer gathers events this long before sending them: under load that is one call for hundreds of events
# instead of one per token, and a follower on another worker sees them at most this much later.
WRITE_INTERVAL_SECONDS = 0.01
RETRY_SECONDS = 0.1  # between sends of a cycle Redis did not answer

Item = tuple[str, tuple[Any, ...]]


@dataclass
class WriteCounts:
    """Where the writer's troubles are counted (the metrics)."""

    failed: Callable[[], None] = lambda: None  # a cycle Redis did not answer (once per cycle, however large)
    refused: Callable[[int], None] = lambda n: None  # commands Redis refused
    shed: Callable[[int], None] = lambda n: None  # events dropped at the byte bound (or lost with a crashed cycle)
    queued: Callable[[int], None] = lambda n: None  # the bytes of events queued: after each cycle, and when full


@dataclass
class _Live:
    """A reply still being read: its keys are renewed."""

    seconds: float
    chat_key: str | None = None


@dataclass
class Writer:
    """Queues a process's writes of kept replies (never awaited on the live path) and sends them (`run`)."""

    client: Client
    cluster: bool
    reader: str  # this process, as the meta of its streams names it
    key_seconds: int
    max_bytes: int
    counts: WriteCounts = field(default_factory=WriteCounts)
    queued_bytes: int = 0  # events queued or waiting to be sent again
    _queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    _unsent: list[Item] = field(default_factory=list)
    _live: dict[str, _Live] = field(default_factory=dict)
    _shed: set[str] = field(default_factory=set)  # replies that lost events: marked `gap` when they end
    _renewed: float = field(default_factory=time.monotonic)
    _refusing: bool = False
    _append_ttl: int = 0  # a stream's events live as its meta does while it is read

    def __post_init__(self) -> None:
        self._append_ttl = self.key_seconds + 1
        self._append_script = self.client.register_script(_APPEND)
        self.reachability = Reachability(
            "Redis unreachable (%s): resumes on other workers fail until it returns",
            "Redis is back: kept replies are shared again",
            self.counts.failed,
        )

    # Queueing ----------------------------------------------------------------------------------------------
    def started(self, stream_id: str, owner: str | None, seconds: float, origin: str | None = None) -> None:
        self._live.setdefault(stream_id, _Live(seconds))
        self._append_ttl = max(self._append_ttl, self._live_ttl(seconds))
        self._queue.put_nowait(("started", (stream_id, owner or "", seconds, origin or "")))

    def chat_started(self, chat_id: str, stream_id: str, seconds: float) -> None:
        self._live.setdefault(stream_id, _Live(seconds)).chat_key = keys.chat(chat_id)
        self._queue.put_nowait(("chat", (chat_id, stream_id, seconds)))

    def append(self, stream_id: str, seq: int, payloads: list[bytes], first_seq: int) -> None:
        """Keep `payloads` (encoded events numbered from `seq`); events before `first_seq` may go."""
        if not payloads:
            return
        size = sum(map(len, payloads))
        # Once a reply lost an event, its later ones go too: no follower can read past the hole.
        if stream_id in self._shed or self.queued_bytes + size > self.max_bytes:
            self._shed.add(stream_id)
            self.counts.shed(len(payloads))
            self.counts.queued(self.queued_bytes)  # full: shown now, not only after the next cycle Redis answers
            return
        self.queued_bytes += size
        events = [(seq + n, payload) for n, payload in enumerate(payloads)]
        self._queue.put_nowait(("append", (stream_id, events, first_seq)))

    def ended(self, stream_id: str, seconds: float) -> None:
        self._live.pop(stream_id, None)
        self._queue.put_nowait(("ended", (stream_id, seconds)))

    def flush(self) -> None:
        """Ask `run` to send what is queued and return."""
        self._queue.put_nowait(("flush", ()))

    # Sending -----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            items = await self._next()
            try:
                sent = await self._write(items)
            except BaseException:  # the supervisor logs it and starts this again: these items are lost with it
                self._forget(items, lost=True)
                raise
            if sent:
                self._forget(items)
            else:
                self._unsent = items
            self.counts.queued(self.queued_bytes)
            if any(kind == "flush" for kind, _ in items):
                return

    async def _next(self) -> list[Item]:
        items: list[Item] = []
        if self._unsent:  # Redis failed last time: try again with what came since, a little later
            items, self._unsent = self._unsent, []
            await asyncio.sleep(RETRY_SECONDS)
        else:
            renew_in = self.key_seconds / 3 - (time.monotonic() - self._renewed) if self._live else None
            try:
                items.append(await asyncio.wait_for(self._queue.get(), None if renew_in is None else max(0, renew_in)))
                await asyncio.sleep(WRITE_INTERVAL_SECONDS)
            except TimeoutError:
                pass  # nothing to write, but keys to renew
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    def _forget(self, items: list[Item], lost: bool = False) -> None:
        for kind, args in items:
            if kind == "ended":  # its end went out (or never will): marked `gap` if it had to be
                self._shed.discard(args[0])
            elif kind == "append":
                stream_id, events, _ = args
                self.queued_bytes -= sum(len(payload) for _, payload in events)
                if lost:
                    self._shed.add(stream_id)
                    self.counts.shed(len(events))

    async def _write(self, items: list[Item]) -> bool:
        """Send `items` (and renewals due) in one round trip: True if Redis answered (refusals counted), False if it
        failed them (they may be sent again as they are)."""
        async with pipeline(self.client) as pipe:
            appended: dict[str, tuple[list[tuple[int, bytes]], int]] = {}
            ended: list[tuple[str, float]] = []
            self._queue_renewals(pipe)
            for kind, args in items:
                if kind == "append":
                    stream_id, events, first_seq = args
                    earlier = appended.get(stream_id)
                    appended[stream_id] = ((earlier[0] if earlier else []) + events, first_seq)
                elif kind == "started":
                    self._queue_started(pipe, *args)
                elif kind == "chat":
                    chat_id, stream_id, seconds = args
                    pipe.set(keys.chat(chat_id), stream_id, ex=self._live_ttl(seconds))
                elif kind == "ended":
                    ended.append(args)
            by_slot: dict[str, dict[str, tuple[list[tuple[int, bytes]], int]]] = {}
            for stream_id, appends in appended.items():
                by_slot.setdefault(keys.tag(stream_id) if self.cluster else "", {})[stream_id] = appends
            scripts: list[tuple[int, list[str]]] = []  # (position in the pipeline, its streams)
            for streams in by_slot.values():
                scripts.append((len(pipe), list(streams)))
                await self._queue_appends(pipe, streams)
            for stream_id, seconds in ended:  # after the appends: a reply's end sets its keys' last lifetime
                self._queue_ended(pipe, stream_id, seconds)
            if not pipe:  # a flush with nothing left to write
                return True
            try:
                results = await pipe.execute(raise_on_error=False)
                for result in results:  # a node lost in a cluster can come back as a result, not be raised
                    if isinstance(result, FAILURES) and not isinstance(result, ResponseError):
                        raise result
            except FAILURES as exc:
                self.reachability.failed(exc)
                return False
            self.reachability.answered()
        lost = self._count_refusals(results, scripts)
        ended_now = lost & {stream_id for stream_id, _ in ended}
        if ended_now:  # refused in the cycle that ended them: their ends went out without the mark
            async with pipeline(self.client) as pipe:
                for stream_id in ended_now:
                    pipe.hset(keys.meta(stream_id), "gap", 1)
                with contextlib.suppress(*FAILURES):
                    await pipe.execute()
        return True

    def _count_refusals(self, results: list[Any], scripts: list[tuple[int, list[str]]]) -> set[str]:
        """Count and log what Redis refused; the streams that lost events with it."""
        refusals = [r for r in results if isinstance(r, ResponseError)]
        lost: set[str] = set()
        for position, streams in scripts:
            if isinstance(results[position], ResponseError):
                lost.update(streams)
        self._shed |= lost  # their followers learn of the gap when the reply ends
        if refusals:
            self.counts.refused(len(refusals))
            if not self._refusing:
                log.error(
                    "Redis refused %d kept-reply writes (%s): followers on other workers get resume_gap or "
                    "resume_unavailable until it takes them again",
                    len(refusals),
                    refusals[0],
                )
        elif self._refusing:
            log.warning("Redis takes kept-reply writes again")
        self._refusing = bool(refusals)
        return lost

    def _live_ttl(self, seconds: float) -> int:
        return self.key_seconds + int(seconds) + 1

    def _queue_renewals(self, pipe: Any) -> None:
        now = time.monotonic()
        if now - self._renewed < self.key_seconds / 3:
            return
        self._renewed = now
        for stream_id, live in self._live.items():
            ttl = self._live_ttl(live.seconds)
            for key in (keys.meta(stream_id), keys.events(stream_id), live.chat_key):
                if key is not None:
                    pipe.expire(key, ttl)

    def _queue_started(self, pipe: Any, stream_id: str, owner: str, seconds: float, origin: str) -> None:
        meta = keys.meta(stream_id)
        pipe.hset(meta, mapping={"owner": owner, "ended": 0, "reader": self.reader, "origin": origin})
        pipe.expire(meta, self._live_ttl(seconds))

    async def _queue_appends(self, pipe: Any, appended: dict[str, tuple[list[tuple[int, bytes]], int]]) -> None:
        """One script call for the streams of one slot (in a cluster; all of them on a single Redis)."""
        stream_keys: list[str] = []
        args: list[int | str | bytes] = [self._append_ttl]
        for stream_id, (events, first_seq) in appended.items():
            stream_keys.append(keys.events(stream_id))
            args += [len(events), f"0-{first_seq}" if first_seq > 1 else ""]
            for seq, payload in events:
                args += [f"0-{seq}", payload]
        await run_script(pipe, self._append_script, stream_keys, args, self.cluster)

    def _queue_ended(self, pipe: Any, stream_id: str, seconds: float) -> None:
        meta = keys.meta(stream_id)  # `_shed` keeps it until the write is over: a retried end is marked again
        pipe.hset(meta, mapping={"ended": 1, "gap": 1} if stream_id in self._shed else {"ended": 1})
        for key in (keys.events(stream_id), meta):
            pipe.expire(key, int(seconds) + 1)
