"""Budget alerts: a caller or team whose spend crosses one of its `alert_at` fractions gets one webhook POST
(CHATSSE_ALERT_WEBHOOK; Slack and Teams incoming webhooks show its `text`), once per threshold and period across
every instance, retried with backoff, and never in a request's path: a charge only queues it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from chatsse.callers.identity import Caller
from chatsse.callers.ledger import report_row
from chatsse.prices import MICRO

log = logging.getLogger("chatsse")
QUEUE_SIZE = 1000  # alerts waiting to be sent; past it they are dropped (and counted)
ATTEMPTS = 4
FIRST_BACKOFF_SECONDS = 1.0
DRAIN_SECONDS = 3.0  # at shutdown, the most time given to alerts still queued
POST_TIMEOUT_SECONDS = 10.0

# Marks an alert as taken, once per key: True if this call took it (a Redis SET NX across instances).
Once = Callable[[str, float], Awaitable[bool]]


@dataclass(frozen=True)
class Alert:
    who: Caller
    threshold: float
    spent: int  # micro-units
    budget: int
    start: float
    end: float

    @property
    def key(self) -> str:
        return "chatsse:{a:" + report_row(self.who) + "}:" + f"{self.start:.0f}:{self.threshold:g}"

    def body(self, currency: str) -> dict[str, object]:
        team = self.who.identity.startswith("team:")
        config = self.who.config
        period = (config.budget_period if config is not None else None) or "month"
        spent, budget = self.spent / MICRO, self.budget / MICRO
        return {
            "team" if team else "caller": self.who.label,
            "spent": spent,
            "budget": budget,
            "currency": currency,
            "period": period,
            "threshold": self.threshold,
            "resets_at": datetime.fromtimestamp(self.end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "text": f"chatsse: {'team' if team else 'caller'} {self.who.label} has spent {spent:.2f} {currency} of "
            f"its {budget:g} {currency} {_PERIODLY[period]} budget ({self.spent / self.budget:.0%}).",
        }


_PERIODLY = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly"}


class Alerts:
    """Queues an alert for each threshold a charge crosses (`spent`, the ledgers' hook) and sends them in order
    (`run`, supervised in the app's lifespan). `counted(result)` feeds `chatsse_alerts_total`."""

    def __init__(self, webhook: str | None, currency: str, once: Once, counted: Callable[[str], None]) -> None:
        self.webhook = webhook
        self.currency = currency
        self.once = once
        self.counted = counted
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(QUEUE_SIZE)
        self.sending = False

    def spent(self, who: Caller, before: int, after: int, start: float, end: float) -> None:
        config = who.config
        if config is None or not config.budget:
            return
        for threshold in config.alert_at:
            if before < threshold * config.budget <= after:  # a charge's INCRBY is atomic: one charge crosses it
                try:
                    self.queue.put_nowait(Alert(who, threshold, after, config.budget, start, end))
                except asyncio.QueueFull:
                    self.counted("dropped")

    async def drained(self, seconds: float) -> None:
        """At shutdown: a few seconds for what is queued and being sent (its threshold is taken already)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while (self.queue.qsize() or self.sending) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=POST_TIMEOUT_SECONDS, follow_redirects=False) as client:
            while True:
                self.sending = False
                alert = await self.queue.get()
                self.sending = True
                if not await self.once(alert.key, alert.end):
                    self.counted("duplicate")
                    continue
                body = alert.body(self.currency)
                log.warning("budget alert: %s", body["text"])
                if self.webhook is None:
                    self.counted("logged")
                else:
                    self.counted("sent" if await self._post(client, body) else "failed")

    async def _post(self, client: httpx.AsyncClient, body: dict[str, object]) -> bool:
        assert self.webhook is not None
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                answer = await client.post(self.webhook, json=body)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if answer.is_success:
                    return True
                problem = f"HTTP {answer.status_code}"
                if answer.status_code < 500 and answer.status_code != 429:
                    break  # the webhook refuses it: asking again would not help
        # The URL is a secret (Slack's and Teams' carry their token in it): the log names the problem only.
        log.error("budget alert: the webhook did not take it (%s): %s", problem, body["text"])
        return False


def in_memory() -> Once:
    """Once per key in this process (without Redis)."""
    taken: dict[str, float] = {}

    async def once(key: str, until: float) -> bool:
        now = datetime.now(UTC).timestamp()
        for old in [k for k, end in taken.items() if end < now]:
            del taken[old]
        if key in taken:
            return False
        taken[key] = until
        return True

    return once
