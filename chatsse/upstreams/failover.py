"""Failover: try the group's upstreams in the router's order until one answers with a first token.

Rate limits and failures rest the upstream that gave them and move on at once; only when every upstream of the
group rests or failed for this request does a request wait, within its retry budget (`Attempts`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from chatsse.errors import (
    ChatSSEError,
    RateLimited,
    StoredResponseNotFound,
    UnsupportedParameter,
    UpstreamUnavailable,
)
from chatsse.record import RequestRecord, current_record
from chatsse.schema import ChatRequest
from chatsse.tracing import NO_TRACING, Target, Tracing
from chatsse.upstreams.auth import EntraTokens, credential_problem
from chatsse.upstreams.client import UpstreamClient, new_http_client
from chatsse.upstreams.config import NeedsRestart, UpstreamConfig
from chatsse.upstreams.reply import UpstreamReply
from chatsse.upstreams.router import Router

log = logging.getLogger("chatsse.upstream")
# asyncio may wake a timer up to its clock resolution early; oversleeping by this much keeps a wait from
# ending just before the cooldown does (which would cost a second wait from the retry budget).
CLOCK_SLACK_SECONDS = 0.002
BACKOFF_BASE_SECONDS = 0.25


@dataclass(frozen=True, kw_only=True)
class RetryBudget:
    """How hard one request tries: retries of upstreams it already tried, and the time it may spend waiting."""

    max_retries: int = 2
    max_wait: float = 10.0


@dataclass
class Attempts:
    """One request's walk over its model group. Trying an upstream for the first time is free; trying one again is
    a retry. Waiting (for a rest to end, or a backoff) is allowed while retries remain and the waits fit in time."""

    group_size: int
    budget: RetryBudget
    retries: int = 0
    waited: float = 0.0
    tried: set[str] = field(default_factory=set)
    failed_since_wait: set[str] = field(default_factory=set)  # not tried again before the next wait
    failed_ever: set[str] = field(default_factory=set)  # a request's repeated failures count once for the circuit
    last_error: ChatSSEError | None = None

    @property
    def made(self) -> int:
        return len(self.tried) + self.retries

    def may_try(self) -> bool:
        """Each upstream once, and `max_retries` more."""
        return self.made < self.group_size + self.budget.max_retries

    def may_wait(self, delay: float) -> bool:
        return self.may_try() and self.retries < self.budget.max_retries and self.waited + delay <= self.budget.max_wait

    def trying(self, name: str) -> None:
        self.retries += name in self.tried
        self.tried.add(name)

    def failed(self, name: str, error: ChatSSEError) -> None:
        self.last_error = error
        self.failed_since_wait.add(name)  # move on, even when it asked to be retried at once

    def first_failure(self, name: str) -> bool:
        """True the first time `name` failed (other than a rate limit) for this request."""
        first = name not in self.failed_ever
        self.failed_ever.add(name)
        return first

    def waiting(self, delay: float) -> None:
        self.waited += delay
        self.failed_since_wait.clear()


class Upstreams:
    """Every configured upstream; `running()` (the app's lifespan) opens the shared HTTP client and Entra tokens."""

    def __init__(
        self,
        upstreams: tuple[UpstreamConfig, ...],
        budget: RetryBudget,
        timeout: float,
        ping_seconds: float,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.upstreams = upstreams
        self.by_name = {upstream.name: upstream for upstream in upstreams}
        self.tracing = tracing
        self.budget = budget
        self.timeout = timeout  # the upstream silence allowed, unless an upstream sets its own
        self.ping_seconds = ping_seconds  # how long to wait for a first token before the stream starts anyway
        self.router = Router(upstreams)
        self.client: UpstreamClient | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        tokens = EntraTokens() if any(u.entra for u in self.upstreams) else None
        async with new_http_client(self.timeout) as http:
            if tokens is not None:
                await tokens.start()
            self.client = UpstreamClient(http, tokens, self.ping_seconds)
            try:
                yield
            finally:
                self.client = None
                if tokens is not None:
                    await tokens.close()

    def resting(self) -> list[str]:
        return self.router.resting(time.monotonic())

    def reconfigure(self, upstreams: tuple[UpstreamConfig, ...]) -> None:
        """Serve new requests from `upstreams` (a reloaded configuration): an upstream that stays keeps its rest
        or open circuit; a removed one takes no new request, while the replies it is making finish."""
        if any(u.entra for u in upstreams) and (self.client is None or self.client.tokens is None):
            raise NeedsRestart("an upstream with Microsoft Entra ID, where none had it before, needs a restart")
        router = Router(upstreams)
        for name, cooldown in self.router.cooldowns.items():
            if name in router.cooldowns:
                router.cooldowns[name] = cooldown
        self.by_name = {**self.by_name, **{upstream.name: upstream for upstream in upstreams}}  # in flight: theirs
        self.upstreams, self.router = upstreams, router

    async def open(self, request: ChatRequest) -> UpstreamReply:
        """The first upstream of the group that answers with a first token; failures before it fail over."""
        assert self.client is not None, "the app lifespan did not run"
        router, record = self.router, current_record.get()
        group = router.groups[request.model]
        barred = _barred(group, request)
        attempts = Attempts(len(group) - len(barred), self.budget)
        while True:
            now = time.monotonic()
            upstream = (
                router.choose(request.model, now, attempts.failed_since_wait | barred) if attempts.may_try() else None
            )
            if upstream is None:
                await self._wait_or_give_up(request.model, attempts, now)
                continue
            attempts.trying(upstream.name)
            if record is not None:
                record.retries = attempts.made - 1
            target = Target(upstream.name, upstream.endpoint, upstream.deployment, upstream.api, upstream.max_tokens)
            span = self.tracing.attempt(target, request, attempts.made)  # failover: sibling attempts
            began = time.monotonic()
            try:
                reply = await self.client.attempt(upstream, request, span)
            except ChatSSEError as error:
                span.failed(error.code)
                _note(record, upstream.name, error.code)
                if not error.retryable:
                    raise
                attempts.failed(upstream.name, error)
                self._rest(upstream.name, error, attempts)
                continue
            except BaseException as exc:  # cancelled (the client left), or a bug: the span still ends
                span.failed("cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else type(exc).__name__)
                raise
            reply.began = began
            router.cooldowns[upstream.name].after_success()  # `router` as the request began: a reload leaves it
            _note(record, upstream.name, "ok")
            if record is not None:
                record.upstream = upstream.name
            return reply

    async def _wait_or_give_up(self, model: str, attempts: Attempts, now: float) -> None:
        """No upstream may be tried now: wait for the soonest to be ready (or back off), or raise the answer."""
        resting, all_rate_limited = self.router.soonest(model, now)
        delay = resting or _backoff(attempts.retries)
        if not attempts.may_wait(delay):
            raise _exhausted(attempts.last_error, all_rate_limited, resting, attempts.group_size)
        log.info("no upstream of %r is ready: waiting %.2fs", model, delay)
        await anyio.sleep(delay + CLOCK_SLACK_SECONDS)
        attempts.waiting(delay)

    def _rest(self, name: str, error: ChatSSEError, attempts: Attempts) -> None:
        cooldown = self.router.cooldowns.get(name)
        if cooldown is None:  # removed by a reload while this request tried it
            return
        if isinstance(error, RateLimited):
            cooldown.after_rate_limit(error.retry_after, time.monotonic())
        elif attempts.first_failure(name):
            cooldown.after_failure(time.monotonic())


def _barred(group: list[UpstreamConfig], request: ChatRequest) -> set[str]:
    """The upstreams of the group that may not serve `request`: all but the one holding a stored response it
    refers to, or those speaking chat completions when it needs the Responses API. None left is a 400 or 404,
    before any upstream call."""
    if request.pinned is not None:
        barred = {u.name for u in group if u.name != request.pinned}
        if len(barred) == len(group):
            raise StoredResponseNotFound(param="previous_response_id")
        return barred
    if request.responses_only is None:
        return set()
    barred = {u.name for u in group if u.protocol != "responses"}
    if len(barred) == len(group):
        field = request.responses_only
        raise UnsupportedParameter(
            f'"{field}" needs an upstream that speaks the Responses API, and the upstreams of model '
            f'{request.model!r} speak chat completions (the operator can add one with protocol = "responses").',
            param=field,
        )
    return barred


def _note(record: RequestRecord | None, upstream: str, outcome: str) -> None:
    if record is not None:
        record.attempts.append(f"{upstream}:{outcome}")


def _backoff(waits: int) -> float:
    # Full jitter keeps many gateway workers from retrying in lockstep.
    return float(BACKOFF_BASE_SECONDS * 2.0**waits * (0.5 + random.random() / 2))


def startup_problem(upstreams: tuple[UpstreamConfig, ...]) -> str | None:
    """What stops these upstreams from working at all (no Entra credential), checked once before serving."""
    if any(upstream.entra for upstream in upstreams):
        return credential_problem()
    return None


def _exhausted(last: ChatSSEError | None, all_rate_limited: bool, wait: float, group_size: int) -> ChatSSEError:
    """The answer when no upstream of the group may be tried again in time: come back when the first one is ready."""
    retry_after = max(wait, 0.001)
    if all_rate_limited:
        return RateLimited(retry_after=retry_after)
    if last is not None and group_size == 1:
        return type(last)(last.message, retry_after=retry_after)
    return UpstreamUnavailable(
        "Every upstream for this model failed or is resting after failures. Try again shortly.", retry_after=retry_after
    )
