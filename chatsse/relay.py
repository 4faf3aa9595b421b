"""The relay: where every face starts a reply and follows a kept one, so caller keys, limits, the stream cap,
failover, resume, logs and metrics are the same whichever protocol the client speaks.

A face parses its request into a `ChatRequest`, calls `open()` (admit, choose and open the upstream, read to the
first token; failures before it raise, to become HTTP errors), and frames the typed events it gets back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from chatsse.callers.identity import Caller, current_caller
from chatsse.callers.ledger import Ledger, Spend, rate_headers, refusal, usage_body
from chatsse.callers.periods import days_of
from chatsse.callers.tokens import count_tokens
from chatsse.errors import ChatSSEError, ModelNotAllowed, StreamNotFound
from chatsse.events import Batch
from chatsse.guards.input import guard_request
from chatsse.guards.services import ContentSafety
from chatsse.prices import MICRO
from chatsse.record import current_record
from chatsse.responses.stored import StoredResponses
from chatsse.resume import StreamKeeper
from chatsse.schema import ChatRequest
from chatsse.server.departure import unless_client_leaves
from chatsse.server.lifecycle import StreamRegistry
from chatsse.server.metrics import Metrics
from chatsse.server.response import STREAM_HEADERS, RelayResponse
from chatsse.settings import Settings
from chatsse.tracing import current_server, provider_name
from chatsse.upstreams import UpstreamReply, Upstreams

log = logging.getLogger("chatsse")


@dataclass
class Opened:
    """A reply that has its first token: its events, the headers that name it, and what closes it."""

    events: AsyncIterator[Batch]
    headers: dict[str, str]
    stream_id: str | None = None  # with resume on: the id clients resume it by
    background: BackgroundTask | None = None

    async def answer(self, framing: Framing, stream: bool, ping_seconds: float) -> Response:
        """The reply as a stream framed by `framing`, or (not streamed) the whole object it collects."""
        if stream:
            headers = {**STREAM_HEADERS, **self.headers}
            return RelayResponse(self.events, framing, headers, ping_seconds, self.background)
        try:
            result, status = await framing.collect(self.events)
        finally:
            if self.background is not None:
                await self.background()
        return JSONResponse(result, status_code=status, headers=self.headers)


class Framing(Protocol):
    """A face's encoding of a reply: each batch as bytes, or the whole reply as one JSON object and its status."""

    def __call__(self, batch: Batch) -> bytes: ...

    async def collect(self, events: AsyncIterator[Batch]) -> tuple[dict[str, Any], int]: ...


class ChatRelay:
    """Opens replies and follows kept ones, for every face."""

    def __init__(
        self,
        settings: Settings,
        streams: StreamRegistry,
        upstreams: Upstreams,
        keeper: StreamKeeper | None,
        ledger: Ledger,
        metrics: Metrics,
        stored: StoredResponses | None = None,
    ) -> None:
        self.settings = settings
        self.streams = streams
        self.upstreams = upstreams
        self.keeper = keeper
        self.ledger = ledger
        self.metrics = metrics
        self.models = settings.models
        self.stored = stored or StoredResponses()
        self.safety = ContentSafety()  # the Content Safety guards' client (the app's lifespan closes it)

    def reconfigure(self, settings: Settings) -> None:
        """A reloaded configuration: its model groups and prices for new requests (its upstreams: `Upstreams`)."""
        self.settings, self.models = settings, settings.models

    def models_for(self, caller: Caller | None) -> list[str]:
        """The model groups `caller` may use."""
        allowed = caller.config.models if caller is not None and caller.config is not None else None
        return self.models if allowed is None else [model for model in self.models if model in allowed]

    async def open(self, chat: ChatRequest, receive: Receive, chat_id: str | None = None) -> Opened:
        """Admit the caller, open the upstream and read to the first token; `chat_id` names a useChat chat, for its
        resume route. The reply's tokens are charged to the caller when it ends, however it ends. A client that
        leaves before the first token (`receive` says so; watched from 0.25 s on) has the upstream request closed and
        its slot given back (ClientLeft, 499): it could not resume a reply it has no id of yet."""
        return await unless_client_leaves(receive, self._open(chat, chat_id))

    async def _open(self, chat: ChatRequest, chat_id: str | None) -> Opened:
        caller = current_caller.get() or Caller("-")
        chat = await self._within_caller_limits(chat, caller)
        team = caller.team.config if caller.team is not None else None
        named = (caller.config.guards if caller.config else None, team.guards if team else None)
        metrics = self.metrics
        chat, output = await guard_request(
            chat, self.settings.guards, named, metrics.guard_acted, self.safety, metrics.guard_failed
        )
        reply_id = os.urandom(8).hex()
        try:
            standing = await self.ledger.admit(caller, reply_id)
        except asyncio.CancelledError:  # its client left: an open-reply slot it may hold goes now, not in 15 min
            await self.ledger.charge(caller, reply_id)
            raise
        if not standing.admitted and caller.config is not None:
            raise await self._refused(caller, refusal(caller, standing))
        try:
            self.streams.admit()
        except ChatSSEError:  # full or draining: the caller's reply never opened
            await self.ledger.charge(caller, reply_id)
            raise
        reply = None
        try:
            reply = await self.upstreams.open(self._with_system_prompt(chat))
        finally:
            self.streams.opened(reply)
            if reply is None:
                await self.ledger.charge(caller, reply_id)  # nothing was read: it no longer counts as open
        reply.screen = output.screen_for(getattr(reply.translator, "passthrough", False))
        reply.watch = output.watch
        headers = {"X-Chatsse-Upstream": reply.upstream, **rate_headers(standing)}
        settlement = _Settlement(self, reply, caller, reply_id, chat)
        reply.on_end = settlement
        if chat.responses_body is not None and chat.responses_body.get("background"):
            reply.on_stop = partial(self._cancel_background, reply)
        await settlement.remember_response()  # chainable as soon as it streams
        if self.keeper is not None:
            stream = self.keeper.keep(reply, self.owner(), chat_id, current_server.get().origin)
            events = self.keeper.follow_local(stream, 0)
            return Opened(events, {**headers, "X-Chatsse-Stream": stream.id}, stream.id)
        # sse-starlette skips the generator's `finally` when the client leaves before its first event
        # (sse-starlette #156); closing in a background task too makes sure the upstream is released.
        return Opened(reply.events(), headers, None, BackgroundTask(self._finished, reply))

    async def follow(self, stream_id: str, after: int) -> AsyncIterator[Batch]:
        """A kept reply's events after sequence `after`, here or on Redis; 404, 410 or 503 before any event."""
        if self.keeper is None:
            raise StreamNotFound("Replies are not kept on this gateway (CHATSSE_RESUME_SECONDS is 0).")
        followed = await self.keeper.follow(stream_id, self.owner(), after)
        current_server.get().follows(followed.origin)  # this request's trace links to the one that started it
        return followed.events

    async def stop(self, stream_id: str) -> None:
        """End a kept reply now, for the caller that started it (404 for anyone else, as for resume)."""
        if self.keeper is None or not await self.keeper.stop(stream_id, self.owner()):
            raise StreamNotFound()

    async def usage(self) -> dict[str, Any]:
        """The calling caller's limits as they stand (`GET /api/v1/usage`)."""
        caller, now = current_caller.get() or Caller("-"), time.time()
        currency = self.settings.prices.currency
        body = usage_body(caller, await self.ledger.standing(caller), now, currency)
        if caller.config is not None and caller.keyed:  # not anonymous callers: their row is everyone's
            counted = (await self.ledger.days([caller.label], days_of("month", now)))[caller.label]
            cost = counted.get("cost", 0) / MICRO if self.settings.prices else None
            body["spend"] = {"period": "month", "requests": counted.get("requests", 0), "cost": cost}
            body["spend"]["currency"] = currency if cost is not None else None
        return body

    async def stream_of_chat(self, chat_id: str) -> str | None:
        """The kept reply of a useChat chat that is still being produced, if there is one this caller may follow."""
        if self.keeper is None:
            return None
        return await self.keeper.active_stream_of_chat(chat_id, self.owner())

    def owner(self) -> str | None:
        """Who may follow and stop a kept stream: the caller whose key started it (else whoever has its id)."""
        caller = current_caller.get()
        return caller.identity if caller is not None and caller.keyed else None

    async def _within_caller_limits(self, chat: ChatRequest, caller: Caller) -> ChatRequest:
        config = caller.config
        if config is None:
            return chat
        if config.models is not None and chat.model not in config.models:
            raise await self._refused(caller, ModelNotAllowed())
        if config.max_tokens is not None:
            wanted = chat.params.get("max_tokens", config.max_tokens)
            chat = dataclasses.replace(chat, params={**chat.params, "max_tokens": min(wanted, config.max_tokens)})
        return chat

    async def _refused(self, caller: Caller, error: ChatSSEError) -> ChatSSEError:
        self.metrics.refusals.labels(caller.label, error.code).inc()
        await self.ledger.refused(caller, error.code)
        return error

    async def _cancel_background(self, reply: UpstreamReply) -> None:
        """A stopped background response is cancelled where it runs: closing its stream would not end it."""
        upstream, response_id = self.upstreams.by_name[reply.upstream], reply.translator.response_id
        client = self.upstreams.client
        if upstream.protocol != "responses" or response_id is None or client is None:
            return
        answer = await client.call(upstream, "POST", f"/{response_id}/cancel", {})
        await answer.aclose()

    async def _finished(self, reply: UpstreamReply) -> None:
        await reply.aclose()
        self.streams.closed(reply)
        await reply.end()  # a reply whose events were never read (the client left before the first)

    def _with_system_prompt(self, chat: ChatRequest) -> ChatRequest:
        if not self.settings.system_prompt:
            return chat
        system = {"role": "system", "content": self.settings.system_prompt}
        body = chat.responses_body
        if body is not None:  # what an upstream speaking Responses gets: the same turn, first in its input
            given = body.get("input")
            given = [{"role": "user", "content": given}] if isinstance(given, str) else given or []
            body = {**body, "input": [system, *given]}
        return dataclasses.replace(chat, messages=[system, *chat.messages], responses_body=body)


class _Settlement:
    """What a reply's end does for its caller: count its tokens (the upstream's usage, else an estimate), charge
    them, and put them on the request's log line and in the metrics."""

    def __init__(self, relay: ChatRelay, reply: UpstreamReply, caller: Caller, reply_id: str, chat: ChatRequest):
        self.relay, self.reply, self.caller, self.reply_id, self.chat = relay, reply, caller, reply_id, chat
        self.record = current_record.get()  # the request's, also when a kept reply ends after it
        self.owner = relay.owner()
        self.remembered = False

    async def remember_response(self) -> None:
        """Record which upstream made a stored Responses API response, for its later calls."""
        body, response_id = self.chat.responses_body, self.reply.translator.response_id
        if self.remembered or body is None or response_id is None or body.get("store") is False:
            return
        if self.relay.upstreams.by_name[self.reply.upstream].protocol != "responses":
            return
        self.remembered = True
        await self.relay.stored.remember(response_id, self.reply.upstream, self.owner)

    async def __call__(self) -> None:
        await self.remember_response()
        translator = self.reply.translator
        tokens = count_tokens(translator.usage, self.chat.messages, translator.relayed_chars)
        upstream = self.relay.upstreams.by_name[self.reply.upstream]
        prices = self.relay.settings.prices
        price = prices.of_reply(translator.response_model, upstream) if prices else None
        cost = price.cost(tokens.prompt, tokens.cached, tokens.completion) if price is not None else None
        try:
            spend = Spend(tokens.prompt, tokens.cached, tokens.completion, cost or 0)
            await self.relay.ledger.charge(self.caller, self.reply_id, spend)
        except Exception:  # a charge that could not be made must not break the reply's end
            log.exception("charging %s's tokens failed", self.caller.identity)
        counted = self.relay.metrics.tokens
        if tokens.estimated:
            counted.labels(self.caller.label, self.chat.model, "estimated").inc(tokens.total)
        else:
            counted.labels(self.caller.label, self.chat.model, "prompt").inc(tokens.prompt)
            counted.labels(self.caller.label, self.chat.model, "completion").inc(tokens.completion)
        if price is not None and cost is not None:  # estimated with the tokens, when they are
            self.relay.metrics.cost.labels(self.caller.label, price.model, prices.currency).inc(cost)
        record = self.record
        if record is not None:
            record.prompt_tokens, record.completion_tokens = tokens.prompt, tokens.completion
            record.tokens_estimated = tokens.estimated
            if cost is not None:
                record.cost_micros, record.currency = cost, prices.currency
        self.relay.metrics.genai.observe(
            provider_name(upstream.api),
            upstream.deployment,
            time.monotonic() - self.reply.began,
            record.ttft_ms / 1000 if record is not None and record.ttft_ms is not None else None,
            None if tokens.estimated else (tokens.prompt, tokens.completion),
            translator.failure.code if translator.failure is not None else None,
        )
