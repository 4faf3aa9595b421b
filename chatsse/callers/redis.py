"""Callers' counters on Redis, shared by every worker and instance: the rules of `ledger.py` as a Lua script, one
call to admit a request and one to charge its reply, on Redis's clock.

A caller's keys share the hash tag `{c:<identity>}` (one Redis Cluster slot per caller), a team's `{c:team:<name>}`:
`...:rpm` and `...:tpm` (bucket level and when, expiring once full again), `...:q:<period start>` (tokens used) and
`...:b:<period start>` (cost, micro-units), each expiring at its period's end, and `...:open` (open replies with
their lease ends). A request of a team's member is admitted with its team's standing read in the same round trip;
its reply is charged to both. Charges are sent as a group commit: those that come while one call is under way go
together in the next, one script call per caller or team, in one round trip, with the spend report's counters
(`chatsse:{r:<row>}:<day start>`, a hash per UTC day). If Redis is lost, requests are let through, as the rate
limit does, and the failures counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatsse.callers.alerts import Once
from chatsse.callers.identity import Caller
from chatsse.callers.ledger import NOTHING, Spend, SpentHook, Standing, report_row
from chatsse.callers.periods import DAY, REPORT_DAYS
from chatsse.callers.scripts import COUNT, SCRIPT, call, day_key, period_now, standing_of, text
from chatsse.redis import FAILURES, Client, Reachability, pipeline, run_script

log = logging.getLogger("chatsse")
ADMISSION_WAIT_SECONDS = 1.0  # the longest a request waits for its caller's limits (or its charge) on Redis


@dataclass
class _Charges:
    """A caller's (or team's) charges waiting for the next call."""

    who: Caller
    spend: Counter[str] = field(default_factory=Counter)  # requests, prompt, cached, completion, cost
    replies: list[str] = field(default_factory=list)
    waiting: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.spend["prompt"] + self.spend["completion"]


@dataclass
class _Admission:
    caller: Caller
    reply_id: str
    standing: asyncio.Future[Standing]


class RedisLedger:
    def __init__(
        self,
        client: Client,
        on_failure: Callable[[], None],
        cluster: bool = False,
        background_failed: Callable[[str], None] = lambda name: None,
        unchecked: Callable[[], None] = lambda: None,
        on_spent: SpentHook = lambda who, before, after, start, end: None,
    ) -> None:
        self.background_failed = background_failed  # the sender raised (counted; what waited on it goes on)
        self.unchecked = unchecked  # an admission that waited its longest and was let through
        self.on_spent = on_spent
        self.client = client
        self.cluster = cluster
        self.script = client.register_script(SCRIPT)
        self.count_script = client.register_script(COUNT)
        self.reachability = Reachability(
            "caller limits: Redis unreachable (%s); letting requests through",
            "caller limits: Redis is back",
            on_failure,
        )
        self._charges: dict[str, _Charges] = {}
        self._admissions: list[_Admission] = []
        self._refusals: Counter[tuple[str, str]] = Counter()  # (report row, code)
        self._sending: asyncio.Task[None] | None = None

    async def admit(self, caller: Caller, reply_id: str) -> Standing:
        if caller.config is None:
            return Standing(admitted=True)
        admission = _Admission(caller, reply_id, asyncio.get_running_loop().create_future())
        self._admissions.append(admission)
        self._send_soon()
        try:
            # shield: a slow answer still settles the admission (and its open-reply slot) when it comes
            return await asyncio.wait_for(asyncio.shield(admission.standing), ADMISSION_WAIT_SECONDS)
        except TimeoutError:
            self.unchecked()
            log.warning(
                "caller limits: no answer from Redis within %.0f s; letting the request through", ADMISSION_WAIT_SECONDS
            )
            return Standing(admitted=True)

    async def charge(self, caller: Caller, reply_id: str, spend: Spend = NOTHING) -> None:
        if caller.config is None:
            return
        unsent = next((a for a in self._admissions if a.reply_id == reply_id), None)
        if unsent is not None:  # its admission was cancelled before it was sent: there is no slot to give back
            self._admissions.remove(unsent)
            unsent.standing.cancel()
            if spend == NOTHING:
                return
        charged = asyncio.get_running_loop().create_future()
        self._add_charge(caller, reply_id, spend).waiting.append(charged)
        self._send_soon()
        # A reply's end waits for its charge (so the next request sees it), but no longer than an admission would:
        # past that it is made when Redis answers.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(charged), ADMISSION_WAIT_SECONDS)

    async def standing(self, caller: Caller) -> Standing:
        if caller.config is None:
            return Standing(admitted=True)
        try:
            standing = standing_of(caller.config, await self.script(**call("peek", caller, "")))
            if caller.team is not None and caller.team.config is not None:
                standing.team = standing_of(caller.team.config, await self.script(**call("peek", caller.team, "")))
            return standing
        except FAILURES as exc:
            self.reachability.failed(exc)
            return Standing(admitted=True)

    async def refused(self, caller: Caller, code: str) -> None:
        if caller.config is not None:
            self._refusals[report_row(caller), code] += 1
            self._send_soon()

    async def days(self, rows: list[str], starts: list[float]) -> dict[str, dict[str, int]]:
        async with pipeline(self.client) as pipe:
            for row in rows:
                for start in starts:
                    pipe.hgetall(day_key(row, start))
            answers = await pipe.execute()
        summed: dict[str, Counter[str]] = {row: Counter() for row in rows}
        for index, answer in enumerate(answers):
            summed[rows[index // len(starts)]].update({text(k): int(v) for k, v in answer.items()})
        return {row: dict(counters) for row, counters in summed.items()}

    def _add_charge(self, who: Caller, reply_id: str | None, spend: Spend) -> _Charges:
        """Put a reply's spend with what goes in the next call for `who`, and for its team."""
        charges = self._charges.setdefault(who.identity, _Charges(who))
        if reply_id is not None:
            charges.replies.append(reply_id)
        if spend != NOTHING:
            charges.spend.update(
                requests=1, prompt=spend.prompt, cached=spend.cached, completion=spend.completion, cost=spend.cost
            )
            if who.team is not None:
                self._add_charge(who.team, None, spend)
        return charges

    def _send_soon(self) -> None:
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send(), name="chatsse-caller-limits")

    async def _send(self) -> None:
        """Everything asked while the last call was under way, in one round trip: the charges first (they happened
        first), one script call per caller or team, then each admission (and its team's standing). Whatever
        happens, everyone waiting is answered: with Redis lost, or when something nobody expected is raised (logged
        and counted), admissions are let through and charges dropped."""
        while self._charges or self._admissions or self._refusals:
            charges, self._charges = self._charges, {}
            admissions, self._admissions = self._admissions, []
            refusals, self._refusals = self._refusals, Counter()
            try:
                results = await self._round(list(charges.values()), admissions, refusals)
                standings = [self._admitted(a, results) for a in admissions]
                self._tell_spent(list(charges.values()), results)
            except Exception:
                log.exception("background task caller-limits failed; letting its requests through")
                self.background_failed("caller-limits")
                standings = [Standing(admitted=True)] * len(admissions)
            for charge in charges.values():
                for charged in charge.waiting:
                    if not charged.done():
                        charged.set_result(None)
            for admission, standing in zip(admissions, standings, strict=True):
                if not admission.standing.done():
                    admission.standing.set_result(standing)

    def _admitted(self, admission: _Admission, results: dict[Any, Any]) -> Standing:
        """An admission's standing from its round's results; one its team refused gives its open slot back."""
        caller, result = admission.caller, results.get(id(admission))
        if result is None:
            return Standing(admitted=True)
        assert caller.config is not None
        standing = standing_of(caller.config, result)
        team_result = results.get((id(admission), "team"))
        if caller.team is not None and caller.team.config is not None and team_result is not None:
            standing.team = standing_of(caller.team.config, team_result)
            if standing.admitted and not standing.team.admitted:
                standing.admitted = False
                self._add_charge(caller, admission.reply_id, NOTHING)  # sent by the loop's next round
        return standing

    def _tell_spent(self, charges: list[_Charges], results: dict[Any, Any]) -> None:
        for charge in charges:
            config, result = charge.who.config, results.get(id(charge))
            if config is None or result is None or not config.budget or not charge.spend["cost"]:
                continue
            after = int(float(result[6]))
            start, end = period_now(config.budget_period or "month")
            self.on_spent(charge.who, after - charge.spend["cost"], after, start, end)

    async def _round(
        self, charges: list[_Charges], admissions: list[_Admission], refusals: Counter[tuple[str, str]]
    ) -> dict[Any, Any]:
        """One pipeline of the script's calls: each one's result by what asked it (none when Redis failed them)."""
        asked: list[Any] = []
        day, day_end = period_now("day")
        expires = int(day_end) + REPORT_DAYS * DAY
        async with pipeline(self.client) as pipe:
            for charge in charges:
                asked_of = call("charge", charge.who, ",".join(charge.replies), charge.tokens, charge.spend["cost"])
                await run_script(pipe, self.script, asked_of["keys"], asked_of["args"], self.cluster)
                asked.append(id(charge))
                if charge.spend:
                    counts = [x for item in charge.spend.items() for x in item]
                    key = day_key(report_row(charge.who), day)
                    await run_script(pipe, self.count_script, [key], [expires, *counts], self.cluster)
                    asked.append(None)
            for (row, code), times in refusals.items():
                await run_script(
                    pipe, self.count_script, [day_key(row, day)], [expires, f"refused:{code}", times], self.cluster
                )
                asked.append(None)
            for admission in admissions:
                asked_of = call("admit", admission.caller, admission.reply_id)
                await run_script(pipe, self.script, asked_of["keys"], asked_of["args"], self.cluster)
                asked.append(id(admission))
                if admission.caller.team is not None:
                    asked_of = call("peek", admission.caller.team, "")
                    await run_script(pipe, self.script, asked_of["keys"], asked_of["args"], self.cluster)
                    asked.append((id(admission), "team"))
            try:
                answers: list[Any] = await pipe.execute()
            except FAILURES as exc:
                self.reachability.failed(exc)
                return {}
            self.reachability.answered()
            return {key: answer for key, answer in zip(asked, answers, strict=True) if key is not None}


def once_on_redis(client: Client) -> Once:
    """Once per key across every instance: a SET NX that lives a day past the period. With Redis lost, an alert is
    sent (a duplicate is better than none)."""

    async def once(key: str, until: float) -> bool:
        try:
            return bool(await client.set(key, "1", nx=True, exat=int(until) + DAY))
        except FAILURES:
            return True

    return once
