"""Which upstreams are resting: cooldowns after a 429 (as long as asked) and circuits after failures (growing).

A single 5xx says little: Azure fails single requests now and then, and one prompt can fail on every upstream
every time. So the circuit opens only when most of the recent requests an upstream saw failed there (at least
CIRCUIT_MIN_FAILURES of the last CIRCUIT_WINDOW; a request that fails there again counts once). Opening clears that
record, so after the rest it takes as much evidence again to reopen (one unlucky prompt cannot keep it open); each
time it does reopen before a success, it rests twice as long.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

DEFAULT_RATE_LIMIT_SECONDS = 1.0  # a 429 that says nothing about when to come back
CIRCUIT_WINDOW = 10
CIRCUIT_MIN_FAILURES = 3
CIRCUIT_BASE_SECONDS = 0.5
CIRCUIT_MAX_SECONDS = 30.0


@dataclass
class Cooldown:
    """One upstream's rest, in `time.monotonic()` seconds; shared by every request in the process."""

    until: float = 0.0
    rate_limited: bool = False
    opened: int = 0  # times the circuit opened since the last success
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=CIRCUIT_WINDOW))  # True: a failure

    def cooling(self, now: float) -> bool:
        return now < self.until

    def after_rate_limit(self, retry_after: float | None, now: float) -> None:
        seconds = DEFAULT_RATE_LIMIT_SECONDS if retry_after is None else retry_after
        self.until = max(self.until, now + seconds)
        self.rate_limited = True

    def after_failure(self, now: float) -> None:
        self.recent.append(True)
        failures = sum(self.recent)
        if failures < CIRCUIT_MIN_FAILURES or failures * 2 < len(self.recent):
            return
        self.opened += 1
        self.recent.clear()
        seconds = min(CIRCUIT_MAX_SECONDS, CIRCUIT_BASE_SECONDS * 2 ** (self.opened - 1))
        self.until = max(self.until, now + seconds)
        self.rate_limited = False

    def after_success(self) -> None:
        self.recent.append(False)
        self.opened = 0
