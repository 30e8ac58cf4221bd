"""When to try a failed attempt again: one pure policy, no I/O, jitter injected.

The dispatcher's default schedule follows Svix and Convoy: the first attempt goes out at once,
then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h, each delay spread by
+-20 % so that many deliveries failing together do not retry together. A receiver's
``Retry-After`` is honoured; rate limiting (429) and timeouts wait at least a minute;
``410 Gone`` means the receiver asked never to be called again. An endpoint failing without
a success for five days is disabled.

:meth:`RetryPolicy.for_window` fits the same schedule into a window from a minute to three
days (Stripe retries for up to three days): as many attempts, the same shape, the last one
about that long after the first.

The receiver's worker retries failing handlers with :meth:`RetryPolicy.exponential`: five
attempts, 1 s doubling up to 300 s, +-20 %.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from convhook.errors import ConfigError

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
MIN_WINDOW = 60.0
MAX_WINDOW = 3 * DAY
# Fitted into a short window, the first waits of the schedule would be milliseconds: a
# receiver that just failed gets at least this long to recover.
MIN_WAIT = 1.0

Jitter = Callable[[], float]
"""A source of draws in [0, 1): ``random.random``, or a seeded ``random.Random().random``."""


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
    """The HTTP status, or ``None`` when no response came (refused, reset, timed out) or the
    attempt was not an HTTP request (a receiver's handler that raised)."""
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
    """Maps (attempt number, outcome) to a :class:`Decision`; ``jitter`` returns [0, 1).

    ``schedule[0]`` is the wait before the first attempt and ``schedule[n]`` the wait after
    failed attempt ``n``, so a delivery gets ``len(schedule)`` attempts in all.
    """

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter_ratio: float = 0.2
    throttle_floor: float = 60.0
    max_retry_after: float = DAY
    disable_after: float = 5 * DAY
    jitter: Jitter = field(default=random.random, compare=False)

    @classmethod
    def exponential(
        cls,
        max_attempts: int = 5,
        base: float = 1.0,
        cap: float = 300.0,
        *,
        jitter_ratio: float = 0.2,
        jitter: Jitter = random.random,
    ) -> RetryPolicy:
        """``max_attempts`` attempts, waiting ``base`` seconds doubling per failure up to ``cap``."""
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        waits = (min(cap, base * 2.0 ** (n - 1)) for n in range(1, max_attempts))
        return cls(schedule=(0.0, *waits), jitter_ratio=jitter_ratio, jitter=jitter)

    @classmethod
    def for_window(
        cls, seconds: float, *, jitter_ratio: float = 0.2, jitter: Jitter = random.random
    ) -> RetryPolicy:
        """The default schedule scaled so its last attempt comes ``seconds`` after the first
        (before jitter), each wait at least a second; ``seconds`` from 60 to 259,200 (3 days).

        A ``Retry-After`` is honoured up to the window, and a 429 or a timeout waits at least
        a minute, or the window's share of one wait if that is shorter.
        """
        if not MIN_WINDOW <= seconds <= MAX_WINDOW:  # a NaN fails this too
            raise ConfigError(
                f"the retry window must be from {MIN_WINDOW:g} seconds (1 minute) to "
                f"{MAX_WINDOW:g} seconds (3 days), got {seconds:g}"
            )
        waits = _fit(DEFAULT_SCHEDULE[1:], seconds)
        return cls(
            schedule=(0.0, *waits),
            jitter_ratio=jitter_ratio,
            throttle_floor=min(cls.throttle_floor, seconds / len(waits)),
            max_retry_after=min(cls.max_retry_after, seconds),
            jitter=jitter,
        )

    @property
    def max_attempts(self) -> int:
        """How many attempts a delivery gets in total (the schedule's length)."""
        return len(self.schedule)

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

    def retry_at(self, attempt: int, now: float) -> float | None:
        """When to try again after failed attempt ``attempt``, or None if it was the last."""
        decision = self.decide(attempt, Outcome())
        return now + decision.delay if decision.verdict is Verdict.RETRY else None

    def disable_cutoff(self, now_ms: int) -> int:
        """An endpoint failing without a success since at or before this time (ms) is disabled."""
        return now_ms - int(self.disable_after * 1000)

    def _spread(self, delay: float) -> float:
        return delay * (1 + self.jitter_ratio * (2 * self.jitter() - 1))


def _fit(waits: tuple[float, ...], total: float) -> tuple[float, ...]:
    # ``waits`` scaled to add up to ``total``; those that would fall under MIN_WAIT are held
    # there and the others share what is left, in proportion.
    held: set[int] = set()
    while True:
        free = [i for i in range(len(waits)) if i not in held]
        scale = (total - MIN_WAIT * len(held)) / sum(waits[i] for i in free)
        short = {i for i in free if waits[i] * scale < MIN_WAIT}
        if not short:
            return tuple(MIN_WAIT if i in held else w * scale for i, w in enumerate(waits))
        held |= short


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
