"""When to try a webhook delivery again: a pure policy, no I/O, jitter injected.

The default schedule follows Svix and Convoy: the first attempt goes out at once, then after
5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h, each delay spread by +-20 % so that
many deliveries failing together do not retry together. A receiver's ``Retry-After`` is
honoured; rate limiting (429) and timeouts wait at least a minute; ``410 Gone`` means the
receiver asked never to be called again.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

DEFAULT_SCHEDULE: tuple[float, ...] = (
    0,
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    24 * 3600,
)
DAY = 24 * 3600.0

Jitter = Callable[[], float]


class Verdict(enum.Enum):
    """What happens to a delivery after one attempt."""

    DELIVERED = "delivered"
    """The receiver answered 2xx: done."""
    RETRY = "retry"
    """The attempt failed; try again after ``Decision.delay``."""
    FAILED = "failed"
    """The attempt failed and it was the last one the schedule allows."""
    GONE = "gone"
    """The receiver answered 410: fail the delivery and disable the endpoint."""


# Not frozen: one is built per attempt, and a frozen dataclass sets each field through
# object.__setattr__.
@dataclass(slots=True)
class Outcome:
    """What one attempt produced, as far as the policy cares."""

    status_code: int | None = None
    """The HTTP status, or ``None`` when no response came (refused, reset, timed out)."""
    timed_out: bool = False
    """The request ran past its timeout."""
    retry_after: float | None = None
    """Seconds the receiver asked to wait (parsed ``Retry-After``), if it said."""

    @property
    def ok(self) -> bool:
        """A 2xx answer; a 3xx is a failure because redirects are not followed."""
        return self.status_code is not None and 200 <= self.status_code < 300


# Not frozen: one is built per attempt, and a frozen dataclass sets each field through
# object.__setattr__.
@dataclass(slots=True)
class Decision:
    """The policy's answer: a verdict and, for ``RETRY``, the delay in seconds."""

    verdict: Verdict
    delay: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """Maps (attempt number, outcome) to a :class:`Decision`; ``jitter`` returns [0, 1)."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter_ratio: float = 0.2
    throttle_floor: float = 60.0
    max_retry_after: float = DAY
    disable_after: float = 5 * DAY
    jitter: Jitter = field(default=random.random, compare=False)

    @property
    def max_attempts(self) -> int:
        """How many attempts a delivery gets in total (the schedule's length)."""
        return len(self.schedule)

    def first_delay(self) -> float:
        """Seconds before the first attempt (0 with the default schedule)."""
        return self.schedule[0]

    def decide(self, attempt: int, outcome: Outcome) -> Decision:
        """Judge attempt number ``attempt`` (1-based) that ended with ``outcome``."""
        if outcome.ok:
            return Decision(Verdict.DELIVERED)
        if outcome.status_code == 410:
            return Decision(Verdict.GONE)
        if attempt >= self.max_attempts:
            return Decision(Verdict.FAILED)
        delay = self._spread(self.schedule[attempt])
        if outcome.status_code == 429 or outcome.timed_out:
            delay = max(delay, self.throttle_floor)
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, self.max_retry_after))
        return Decision(Verdict.RETRY, delay)

    def should_disable(self, failing_for: float) -> bool:
        """Whether an endpoint failing without a success for ``failing_for`` s is disabled."""
        return failing_for >= self.disable_after

    def _spread(self, delay: float) -> float:
        return delay * (1 + self.jitter_ratio * (2 * self.jitter() - 1))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
