"""What a rate limiter answers, wherever it keeps its counts."""

from __future__ import annotations

from typing import Protocol


class RateLimiter(Protocol):
    async def retry_after(self, caller: str) -> float | None:
        """Take one request from `caller`'s allowance: None if allowed, else seconds until the next one."""
        ...
