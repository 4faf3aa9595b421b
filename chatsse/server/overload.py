"""Shedding under overload: a cheap timer measures how late the event loop wakes (its lag), how much of a core the
loop's thread used or waited for over the last second (its CPU share), and how long new connections wait in the
kernel's accept queue. While the lag is over CHATSSE_MAX_LOOP_LAG_MS, or the CPU share is over
CHATSSE_MAX_CPU_PERCENT while they wait, new chat requests get `503 overloaded` with `Retry-After` at once, before
their body is read or any upstream called; streams already admitted, and resumes of them, go on; readiness answers
503 so a balancer moves traffic away.
The loop lags only if two readings in a row are late: one late reading is a hiccup (a host's stall, a collector
pass), and shedding on it refused every new chat for a second for nothing. Shedding ends once both have stayed well
under their bounds for a second (hysteresis: it does not flap). Each start is logged with its reason, each end with
how long it lasted. An overload of the core leaves a ceiling on the streams open behind it (`Ceiling`), so that
the next ones are refused at once instead of after queueing again.

Why these signals: a saturated process keeps its loop turning (a 50 ms timer is rarely more than 100 ms late) while
new connections wait in the accept queue for many seconds; and a busy core alone is no overload (a burst of new
streams, or steady work near capacity, is served on time). Figures: bench/REPORT.md, "Under overload"."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from chatsse.errors import Overloaded
from chatsse.server.backlog import AcceptQueue

log = logging.getLogger("chatsse")

TICK_SECONDS = 0.05  # how often the loop's lag is measured
CALM_SECONDS = 1.0  # the lag must stay under half the threshold this long before shedding ends
CPU_WINDOW_SECONDS = 1.0  # the CPU share is over this long
CPU_CALM_MARGIN = 0.15  # shedding on CPU ends under the bound less this
QUEUE_FLOOR = 16  # fewer in the accept queue are no backlog
MAX_ACCEPT_WAIT = 0.1  # seconds a new connection may wait to be accepted before a busy core counts as overloaded
CEILING_SHARE = 0.8  # after an overload of the core, new streams are taken up to this share of those open then
CEILING_STEP = 0.02  # the ceiling rises by at least this share of itself (and 1) each second it turns streams away
CEILING_MAX_STEP = 0.05  # and at most by this share: half the room the core has left under its bound
CEILING_LIFT_SECONDS = 10.0  # and is lifted once fewer than half of it have stayed open this long
# Fewer streams open when the core falls behind are not what overloads it (a burst of new ones is, and shedding is
# enough): no ceiling is set, nor lowered below this. Without it, a closed loop of 32 clients that found the
# process behind for a moment got a ceiling of 1 and spun on refusals (bench/REPORT.md, "its fourth part").
CEILING_MIN_STREAMS = 50
# New replies: what is shed. Resumes (GET .../stream/{id}), stops, models, usage and health are not.
SHED = {
    ("POST", "/api/v1/chat/stream"),
    ("GET", "/api/v1/chat/stream"),
    ("POST", "/api/v1/chat/ui"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
}


class LoopLag:
    """The event loop's lag, measured every TICK_SECONDS, and whether new work is being shed."""

    def __init__(
        self,
        max_lag: float,
        measured: Callable[[float], None] = lambda lag: None,
        max_cpu: float = 0.0,
        accepted: Callable[[], int] | None = None,
        open_streams: Callable[[], int] | None = None,
        limited: Callable[[int], None] = lambda limit: None,
    ) -> None:
        self.max_lag = max_lag  # seconds; 0: not on lag
        self.max_cpu = max_cpu  # a share of one core; 0: not on CPU
        # How many connections this process has accepted so far: with the accept queue, how long a new one waits.
        # None: shed on the CPU share alone.
        self.accepted = accepted
        self.measured = measured  # the gauge
        self.lag = 0.0
        self.cpu = 0.0
        self.queue = 0  # connections waiting to be accepted
        self.wait = 0.0  # and how long the last of them will wait at the rate they are accepted (seconds)
        self.shedding = False
        self._shed_since = 0.0
        self._late_before = False  # the last reading was over the lag bound: this one, if late too, is a lag
        self._calm_since: float | None = None
        self._cpu_samples: deque[tuple[float, float]] = deque()
        self._accepted_samples: deque[tuple[float, int]] = deque()
        self._accept_queue = AcceptQueue()
        # How many streams are open: with it, an overload of the core leaves a ceiling on them behind (None: none).
        self.ceiling = Ceiling(open_streams) if open_streams is not None else None
        self.limited = limited  # the ceiling's gauge (0: none)

    def refuses(self) -> bool:
        """Whether a new chat is refused now: while shedding, or while the streams open are at the ceiling."""
        if self.shedding:
            return True
        ceiling = self.ceiling
        return ceiling is not None and ceiling.limit is not None and ceiling.full()

    def overloaded(self, now: float) -> bool:
        """What readiness says: shedding, or the ceiling turned a new chat away within the last calm second."""
        return self.shedding or (self.ceiling is not None and now - self.ceiling.refused_at < CALM_SECONDS)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + TICK_SECONDS
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            lag = max(0.0, loop.time() - expected)
            cpu = self._cpu_share(now, thread_demand()) if self.max_cpu else 0.0
            wait = self._accept_wait(now, lag) if self.max_cpu and self.accepted is not None else None
            self.observe(lag, now, cpu, wait)

    def _accept_wait(self, now: float, lag: float = 0.0) -> float | None:
        """How long a connection arriving now would wait to be accepted: the queue before it, at the rate this
        process accepted connections over the last second (None: the queue cannot be read). `lag`: how late this
        reading came."""
        assert self.accepted is not None
        queue = self._accept_queue.length(now)
        samples = self._accepted_samples
        samples.append((now, self.accepted()))
        while now - samples[0][0] > CPU_WINDOW_SECONDS:
            samples.popleft()
        if queue is None:
            return None
        fresh, self.queue = self.queue == 0, queue
        if queue < QUEUE_FLOOR:
            return 0.0
        if fresh:
            # Empty at the last reading: a burst that arrived since, not yet taken at a rate of its own (the last
            # second's may be an idle one's). It waits for the loop's next turn: about as long as this one was late.
            return lag
        first_at, first_count = samples[0]
        rate = (samples[-1][1] - first_count) / (now - first_at) if now > first_at else 0.0
        return queue / rate if rate > 0 else float("inf")

    def _cpu_share(self, now: float, used: float) -> float:
        samples = self._cpu_samples
        samples.append((now, used))
        while now - samples[0][0] > CPU_WINDOW_SECONDS:
            samples.popleft()
        first_at, first_used = samples[0]
        return (used - first_used) / (now - first_at) if now - first_at >= CPU_WINDOW_SECONDS / 2 else 0.0

    def observe(self, lag: float, now: float, cpu: float = 0.0, wait: float | None = None) -> None:
        """One reading: the loop's lag, the CPU share, and how long a new connection waits to be accepted (None:
        not known)."""
        self.lag, self.cpu, self.wait = lag, cpu, wait or 0.0
        self.measured(lag)
        # A busy core alone is no overload (a burst of new streams, or steady work near capacity, is served on
        # time); a busy core that leaves new connections waiting to be accepted is one.
        behind = wait is None or wait > MAX_ACCEPT_WAIT
        late = bool(self.max_lag and lag > self.max_lag)
        lagging, self._late_before = late and self._late_before, late  # one late reading alone is a hiccup
        over = lagging or (self.max_cpu and cpu > self.max_cpu and behind)
        calm_lag = not self.max_lag or lag < self.max_lag / 2
        # Under a ceiling, what is admitted is bounded already: a core back under its bound is calm enough.
        bounded = self.ceiling is not None and self.ceiling.limit is not None
        calm = calm_lag and (not self.max_cpu or cpu < self.max_cpu - (0.0 if bounded else CPU_CALM_MARGIN))
        if over:
            if not self.shedding:
                if self.ceiling is not None and not late:  # a late loop says nothing of what the core serves
                    self.ceiling.lower(now)  # the core could not keep up with the streams open: fewer from now on
                self._shed_since = now
                log.warning("shedding new chats: %s", self._reason(lagging))
            self.shedding, self._calm_since = True, None
        elif self.shedding and calm:
            if self._calm_since is None:
                self._calm_since = now
            elif now - self._calm_since >= CALM_SECONDS:
                self.shedding, self._calm_since = False, None
                log.info("shedding ended after %.1f s", now - self._shed_since)
        else:
            self._calm_since = None
            if not self.shedding and self.ceiling is not None and (not self.max_cpu or cpu < self.max_cpu):
                # The core keeps up: if the ceiling turns streams away, it may rise, the faster the more room left.
                self.ceiling.calm(now, (self.max_cpu - cpu) / self.max_cpu if self.max_cpu else 0.0)
        if self.ceiling is not None:
            self.limited(self.ceiling.limit or 0)

    def _reason(self, lagging: bool) -> str:
        if lagging:
            return f"the event loop is {self.lag * 1000:.0f} ms late (bound {self.max_lag * 1000:.0f} ms)"
        if not self.wait:
            waiting = "its accept queue unread"
        elif self.wait == float("inf"):
            waiting = f"{self.queue} new connections wait, none accepted for a second"
        else:
            waiting = f"{self.queue} new connections wait {self.wait:.2f} s to be accepted"
        ceiling = self.ceiling.limit if self.ceiling is not None else None
        limited = f"; new streams limited to {ceiling} open" if ceiling is not None else ""
        return f"the loop's thread wants {self.cpu:.0%} of a core (bound {self.max_cpu:.0%}), {waiting}{limited}"


class Ceiling:
    """How many streams may be open after an overload of the core: a share of those open when it began (a burst
    of admissions then, each one queued for longer, is what makes the tails and the slow refusals; refused at the
    ceiling, a new chat is answered at once). Lowered again at each overload, raised while it turns streams away
    on a calm core, lifted once the load has gone: additive increase, multiplicative decrease."""

    def __init__(self, open_streams: Callable[[], int]) -> None:
        self.open_streams = open_streams
        self.limit: int | None = None
        self.refused_at = float("-inf")  # the last new chat turned away here (time.monotonic)
        self._raised_at = 0.0
        self._low_since: float | None = None

    def full(self) -> bool:
        if self.limit is None or self.open_streams() < self.limit:
            return False
        self.refused_at = time.monotonic()
        return True

    def lower(self, now: float) -> None:
        open_now = self.open_streams()
        if self.limit is None and open_now < CEILING_MIN_STREAMS:
            return
        limit = int(CEILING_SHARE * (open_now if self.limit is None else min(self.limit, open_now)))
        self.limit = max(CEILING_MIN_STREAMS, limit)
        self._raised_at, self._low_since = now, None

    def calm(self, now: float, room: float = 0.0) -> None:
        """A reading of a core that keeps up, while not shedding; `room`: how far under its bound, as a share of
        it (0.25 at 60% of an 80% bound)."""
        if self.limit is None:
            return
        if now - self.refused_at < CALM_SECONDS:  # it binds: room for more
            if now - self._raised_at >= CALM_SECONDS:
                step = min(CEILING_MAX_STEP, max(CEILING_STEP, room / 2))
                self.limit += max(1, int(self.limit * step))
                self._raised_at = now
            self._low_since = None
        elif self.open_streams() < self.limit / 2:
            if self._low_since is None:
                self._low_since = now
            elif now - self._low_since >= CEILING_LIFT_SECONDS:
                log.info("stream ceiling of %d lifted: the load has gone", self.limit)
                self.limit, self._low_since = None, None
        else:
            self._low_since = None


def thread_demand() -> float:
    """Seconds this thread has run, plus those it waited to run (Linux's schedstat: on a core shared with other
    processes or workers, a saturated loop's thread runs less than the whole core but waits for the rest); where
    that cannot be read, the seconds it ran."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stats:
            ran, waited = stats.read().split()[:2]
        return (int(ran) + int(waited)) / 1e9
    except (OSError, ValueError):
        return time.thread_time()


def _new_chat(method: str, path: str) -> bool:
    return (method, path) in SHED or (method == "POST" and path.startswith("/openai/deployments/"))


class ShedMiddleware:
    """Refuses new chat requests while shedding or at the ceiling (`counted` per refusal): the cheapest answer."""

    def __init__(self, app: ASGIApp, lag: LoopLag, counted: Callable[[], None]) -> None:
        self.app = app
        self.lag = lag
        self.counted = counted

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: an admitted request's own call is returned, so its stream holds no frame of this.
        if scope["type"] == "http" and _new_chat(scope["method"], scope["path"]) and self.lag.refuses():
            self.counted()
            return Overloaded(retry_after=1).response_for(scope["path"])(scope, receive, send)
        return self.app(scope, receive, send)
