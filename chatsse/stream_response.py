"""sse-starlette's EventSourceResponse, minus a per-event cost that a relay pays thousands of times a second."""

from __future__ import annotations

from sse_starlette import EventSourceResponse
from starlette.types import Message, Send


class RelayResponse(EventSourceResponse):
    """Without a send timeout, send directly: sse-starlette otherwise opens an anyio cancel scope (`move_on_after`)
    around every event; skipping it cut the gateway's CPU per chunk by about a quarter on W1 (bench/REPORT.md)."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)
