"""Pacing for the dispatcher: an endpoint's rate limit and the backoff after database errors."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """A token bucket for an endpoint's optional rate limit (per second)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = 1.0
        self.stamp = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


class Backoff:
    """Capped exponential backoff: 0.1 s, 0.2 s, ... up to 5 s; reset by a success.

    Not a :class:`~convhook.retry.RetryPolicy`: it paces one dispatcher loop while the
    database fails, so it counts that loop's consecutive failures itself, never gives up and
    has no verdicts, whereas a retry policy is stateless and judges one delivery's attempt.
    """

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    @property
    def delay(self) -> float:
        return float(min(self.cap, self.first * 2 ** max(0, self.failures - 1)))

    def next(self) -> float:
        self.failures += 1
        return self.delay

    def reset(self) -> None:
        self.failures = 0
