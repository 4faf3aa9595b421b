"""Which upstreams are resting: cooldowns after a 429 (as long as asked) and circuits after failures (growing)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RATE_LIMIT_SECONDS = 1.0  # a 429 that says nothing about when to come back
CIRCUIT_BASE_SECONDS = 0.5
CIRCUIT_MAX_SECONDS = 30.0


@dataclass
class Cooldown:
    """One upstream's rest, in `time.monotonic()` seconds; shared by every request in the process."""

    until: float = 0.0
    rate_limited: bool = False
    failures: int = 0  # in a row; the circuit's rest doubles with each

    def cooling(self, now: float) -> bool:
        return now < self.until

    def after_rate_limit(self, retry_after: float | None, now: float) -> None:
        seconds = DEFAULT_RATE_LIMIT_SECONDS if retry_after is None else retry_after
        self.until = max(self.until, now + seconds)
        self.rate_limited = True

    def after_failure(self, now: float) -> None:
        self.failures += 1
        seconds = min(CIRCUIT_MAX_SECONDS, CIRCUIT_BASE_SECONDS * 2 ** (self.failures - 1))
        self.until = max(self.until, now + seconds)
        self.rate_limited = False

    def after_success(self) -> None:
        self.failures = 0
