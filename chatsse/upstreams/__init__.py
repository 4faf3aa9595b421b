"""The upstreams: choose one for the request's model group, fail over before the first token, return its reply.

A request's walk: `Router.choose` (priority tier, weight, cooldowns) -> `UpstreamClient.attempt` (API shape, key or
Entra token, first token) -> `UpstreamReply.events()`. Rate limits and failures rest the upstream that gave them
and move on at once; only when every upstream of the group rests does a request wait, within the retry budget.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from chatsse.errors import ChatSSEError, RateLimited, UpstreamUnavailable
from chatsse.observe import current_record
from chatsse.schema import ChatRequest
from chatsse.settings import Settings
from chatsse.upstreams.auth import EntraTokens, credential_problem
from chatsse.upstreams.client import UpstreamClient, new_http_client
from chatsse.upstreams.reply import UpstreamReply
from chatsse.upstreams.router import Router

__all__ = ["UpstreamReply", "Upstreams", "startup_problem"]

log = logging.getLogger("chatsse.upstream")
# asyncio may wake a timer up to its clock resolution early; oversleeping by this much keeps a wait from
# ending just before the cooldown does (which would cost a second wait from the retry budget).
CLOCK_SLACK_SECONDS = 0.002
BACKOFF_BASE_SECONDS = 0.25


class Upstreams:
    """Every configured upstream; `running()` (the app's lifespan) opens the shared HTTP client and Entra tokens."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.router = Router(settings.upstreams)
        self.client: UpstreamClient | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        tokens = EntraTokens() if any(u.entra for u in self.settings.upstreams) else None
        async with new_http_client(self.settings.upstream_timeout) as http:
            if tokens is not None:
                await tokens.start()
            self.client = UpstreamClient(http, tokens, self.settings.ping_seconds)
            try:
                yield
            finally:
                self.client = None
                if tokens is not None:
                    await tokens.close()

    def resting(self) -> list[str]:
        return self.router.resting(time.monotonic())

    async def open(self, request: ChatRequest) -> UpstreamReply:
        """The first upstream of the group that answers with a first token; failures before it fail over."""
        assert self.client is not None, "the app lifespan did not run"
        settings, router = self.settings, self.router
        record = current_record.get()
        # Trying another upstream is free; trying one again is a retry, and waiting spends the retry budget's time.
        attempts, retries, waited = 0, 0, 0.0
        most_attempts = len(router.groups[request.model]) + settings.max_retries
        last_error: ChatSSEError | None = None
        attempted: set[str] = set()
        failed_here: set[str] = set()  # failed for this request: tried again only after a wait
        failed_once: set[str] = set()  # a request's repeated failures on one upstream are one piece of evidence
        while True:
            now = time.monotonic()
            upstream = router.choose(request.model, now, failed_here) if attempts < most_attempts else None
            if upstream is None:
                resting, all_rate_limited = router.soonest(request.model, now)
                delay = resting or _backoff(retries)
                in_budget = retries < settings.max_retries and waited + delay <= settings.max_retry_wait
                if attempts < most_attempts and in_budget:
                    log.info("no upstream of %r is ready: waiting %.2fs", request.model, delay)
                    await anyio.sleep(delay + CLOCK_SLACK_SECONDS)
                    waited += delay
                    failed_here.clear()
                    continue
                raise _exhausted(last_error, all_rate_limited, resting, len(router.groups[request.model]))
            attempts += 1
            retries += upstream.name in attempted
            attempted.add(upstream.name)
            if record is not None:
                record.retries = attempts - 1
            try:
                reply = await self.client.attempt(upstream, request)
            except ChatSSEError as error:
                if record is not None:
                    record.attempts.append(f"{upstream.name}:{error.code}")
                if not error.retryable:
                    raise
                cooldown = router.cooldowns[upstream.name]
                failed_here.add(upstream.name)  # move on, even when it asked to be retried at once
                if isinstance(error, RateLimited):
                    cooldown.after_rate_limit(error.retry_after, time.monotonic())
                else:
                    if upstream.name not in failed_once:
                        cooldown.after_failure(time.monotonic())
                    failed_once.add(upstream.name)
                last_error = error
                continue
            router.cooldowns[upstream.name].after_success()
            if record is not None:
                record.attempts.append(f"{upstream.name}:ok")
                record.upstream = upstream.name
            return reply


def _backoff(waits: int) -> float:
    # Full jitter keeps many gateway workers from retrying in lockstep.
    return float(BACKOFF_BASE_SECONDS * 2.0**waits * (0.5 + random.random() / 2))


def startup_problem(settings: Settings) -> str | None:
    """What stops these upstreams from working at all (no Entra credential), checked once before serving."""
    if any(upstream.entra for upstream in settings.upstreams):
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
