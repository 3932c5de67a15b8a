"""Retry policy of sending: bounded attempts, exponential backoff with jitter, a rate limit per provider."""

from __future__ import annotations

import asyncio
import random

MAX_ATTEMPTS = 8


class Retry(Exception):
    """A transient failure: send again after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        super().__init__(f"retry in {delay:.1f}s")


def backoff(attempt: int, retry_after: float | None = None, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter, never sooner than the provider asked."""
    delay = random.uniform(base, min(cap, base * 2 ** attempt))
    return max(delay, retry_after or 0.0)


class RateLimiter:
    """A token bucket per provider: `rate` messages a second (0: unlimited), waiting without blocking others."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            now = asyncio.get_running_loop().time()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)

