"""Which upstream made each stored response, and for whom: a Responses API id lives in one Azure resource, so
`previous_response_id` and `GET`/`DELETE`/`cancel`/`input_items` go to the upstream that made it, and only for the
caller that made it. Kept in this process, or on Redis (CHATSSE_REDIS_URL) for every worker and instance, for as
long as Azure keeps a response (30 days)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

log = logging.getLogger("chatsse")

KEPT_SECONDS = 30 * 24 * 3600  # Azure keeps a stored response 30 days
MAX_IN_MEMORY = 100_000  # the oldest are forgotten past this (memory bound: about 200 bytes each)
ANYONE = "-"  # the owner of a response made without a caller key: whoever has its id


class StoredResponses:
    """Response id -> the upstream that made it and its owner, in this process (bounded, oldest forgotten first)."""

    def __init__(self, kept: float = KEPT_SECONDS, most: int = MAX_IN_MEMORY) -> None:
        self.kept, self.most = kept, most
        self._made: OrderedDict[str, tuple[str, str, float]] = OrderedDict()

    async def remember(self, response_id: str, upstream: str, owner: str | None) -> None:
        self._made[response_id] = (upstream, owner or ANYONE, time.monotonic() + self.kept)
        self._made.move_to_end(response_id)
        while len(self._made) > self.most:
            self._made.popitem(last=False)

    async def upstream_of(self, response_id: str, owner: str | None) -> str | None:
        """The upstream that made `response_id` for `owner`; None for an unknown, expired or another's id."""
        made = self._made.get(response_id)
        if made is None or made[2] < time.monotonic():
            return None
        return made[0] if made[1] == (owner or ANYONE) else None

    async def forget(self, response_id: str) -> None:
        self._made.pop(response_id, None)


class RedisStoredResponses(StoredResponses):
    """The same on Redis: one key per response, expiring with it. A Redis that does not answer is a miss (the
    request then gets 404, as for an unknown id), logged."""

    def __init__(self, client: Any, kept: float = KEPT_SECONDS) -> None:
        super().__init__(kept)
        self.client = client

    @staticmethod
    def _key(response_id: str) -> str:
        return f"chatsse:response:{response_id}"

    async def remember(self, response_id: str, upstream: str, owner: str | None) -> None:
        try:
            await self.client.set(self._key(response_id), f"{owner or ANYONE}\n{upstream}", ex=int(self.kept))
        except Exception as exc:  # a response whose maker is not recorded only cannot be chained
            log.warning("recording stored response %s on Redis failed: %s", response_id, type(exc).__name__)

    async def upstream_of(self, response_id: str, owner: str | None) -> str | None:
        try:
            made = await self.client.get(self._key(response_id))
        except Exception as exc:
            log.warning("looking up stored response %s on Redis failed: %s", response_id, type(exc).__name__)
            return None
        if made is None:
            return None
        text = made.decode() if isinstance(made, bytes) else str(made)
        who, _, upstream = text.partition("\n")
        return upstream if who == (owner or ANYONE) else None

    async def forget(self, response_id: str) -> None:
        try:
            await self.client.delete(self._key(response_id))
        except Exception as exc:
            log.warning("forgetting stored response %s on Redis failed: %s", response_id, type(exc).__name__)
