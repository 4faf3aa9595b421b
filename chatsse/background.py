"""Background work under supervision: a loop that raises what nobody expected is logged once with its traceback,
counted, and started again after a backoff, never left dead in silence (a stopped writer would let its queue grow
and tell followers their replies were lost)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("chatsse")

FIRST_BACKOFF_SECONDS = 0.1
MOST_BACKOFF_SECONDS = 10.0
FAILING_AFTER = 3  # failures in a row before the work counts as failing (readiness shows it)
RECOVERED_AFTER_SECONDS = 30.0  # and this long without another failure, it counts as working again


class Supervised:
    """Runs `work` in a task until it returns or is cancelled; an unexpected exception restarts it, with a backoff
    that doubles while it keeps failing. `failed(name)` counts each failure (`chatsse_background_failures_total`)."""

    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[None]],
        failed: Callable[[str], None],
        recovered_after: float = RECOVERED_AFTER_SECONDS,
    ) -> None:
        self.name = name
        self.work = work
        self.failed = failed
        self.recovered_after = recovered_after
        self.failures_in_a_row = 0
        self.last_failure = 0.0  # on the loop's clock
        self.task: asyncio.Task[None] | None = None

    @property
    def failing(self) -> bool:
        """It failed FAILING_AFTER times in a row, the last time recently (a loop that runs has nothing to report
        until it fails again: quiet for `recovered_after` seconds, it counts as working)."""
        if self.failures_in_a_row < FAILING_AFTER:
            return False
        return asyncio.get_running_loop().time() - self.last_failure < self.recovered_after

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"chatsse-{self.name}")
        return self.task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await self.work()
                return
            except Exception:
                if loop.time() - began > MOST_BACKOFF_SECONDS:
                    self.failures_in_a_row = 0  # it ran well for a while: this is a new burst, not the same one
                self.failures_in_a_row += 1
                self.last_failure = loop.time()
                log.exception("background task %s failed; starting it again", self.name)
                self.failed(self.name)
            backoff = min(MOST_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (self.failures_in_a_row - 1))
            await asyncio.sleep(backoff)
