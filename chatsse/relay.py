"""The relay: where every face starts a reply and follows a kept one, so caller keys, limits, the stream cap,
failover, resume, logs and metrics are the same whichever protocol the client speaks.

A face parses its request into a `ChatRequest`, calls `open()` (admit, choose and open the upstream, read to the
first token; failures before it raise, to become HTTP errors), and frames the typed events it gets back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.background import BackgroundTask

from chatsse.errors import StreamNotFound
from chatsse.events import Batch
from chatsse.record import current_record
from chatsse.resume import StreamKeeper
from chatsse.schema import ChatRequest
from chatsse.server.lifecycle import StreamRegistry
from chatsse.settings import Settings
from chatsse.upstreams import UpstreamReply, Upstreams


@dataclass
class Opened:
    """A reply that has its first token: its events, the headers that name it, and what closes it."""

    events: AsyncIterator[Batch]
    headers: dict[str, str]
    stream_id: str | None = None  # with resume on: the id clients resume it by
    background: BackgroundTask | None = None


class ChatRelay:
    """Opens replies and follows kept ones, for every face."""

    def __init__(
        self, settings: Settings, streams: StreamRegistry, upstreams: Upstreams, keeper: StreamKeeper | None
    ) -> None:
        self.settings = settings
        self.streams = streams
        self.upstreams = upstreams
        self.keeper = keeper
        self.models = settings.models

    async def open(self, chat: ChatRequest, chat_id: str | None = None) -> Opened:
        """Open the upstream and read to the first token; `chat_id` names a useChat chat, for its resume route."""
        self.streams.admit()
        reply = None
        try:
            reply = await self.upstreams.open(self._with_system_prompt(chat))
        finally:
            self.streams.opened(reply)
        headers = {"X-Chatsse-Upstream": reply.upstream}
        if self.keeper is not None:
            stream = self.keeper.keep(reply, self.owner(), chat_id)
            events = self.keeper.follow_local(stream, 0)
            return Opened(events, {**headers, "X-Chatsse-Stream": stream.id}, stream.id)
        # sse-starlette skips the generator's `finally` when the client leaves before its first event
        # (sse-starlette #156); closing in a background task too makes sure the upstream is released.
        return Opened(reply.events(), headers, None, BackgroundTask(self._finished, reply))

    async def follow(self, stream_id: str, after: int) -> AsyncIterator[Batch]:
        """A kept reply's events after sequence `after`, here or on Redis; 404, 410 or 503 before any event."""
        if self.keeper is None:
            raise StreamNotFound("Replies are not kept on this gateway (CHATSSE_RESUME_SECONDS is 0).")
        return await self.keeper.follow(stream_id, self.owner(), after)

    async def stream_of_chat(self, chat_id: str) -> str | None:
        """The kept reply of a useChat chat that is still being produced, if there is one this caller may follow."""
        if self.keeper is None:
            return None
        return await self.keeper.active_stream_of_chat(chat_id, self.owner())

    def owner(self) -> str | None:
        """Who may follow a kept stream: the caller key that started it (with keys off, whoever has its id)."""
        record = current_record.get()
        return record.caller if self.settings.api_keys and record is not None else None

    async def _finished(self, reply: UpstreamReply) -> None:
        await reply.aclose()
        self.streams.closed(reply)

    def _with_system_prompt(self, chat: ChatRequest) -> ChatRequest:
        if not self.settings.system_prompt:
            return chat
        return dataclasses.replace(
            chat, messages=[{"role": "system", "content": self.settings.system_prompt}, *chat.messages]
        )
