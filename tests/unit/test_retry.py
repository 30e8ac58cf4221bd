"""The retry policy: one table of (policy, attempt, outcome, jitter) -> (verdict, delay)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from convhook.errors import ConfigError
from convhook.retry import (
    DAY,
    DEFAULT_SCHEDULE,
    Outcome,
    RetryPolicy,
    Verdict,
    parse_retry_after,
)

MID = 0.5  # jitter draw that leaves the delay unchanged
LOW = 0.0  # -20 %
HIGH = 1.0  # +20 %
NOW = 1000.0

DISPATCH = RetryPolicy()
"""The dispatcher's default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h."""
RECEIVE = RetryPolicy.exponential()
"""The receiver worker's default: five attempts, 1 s doubling up to 300 s."""
LONG = RetryPolicy.exponential(max_attempts=12)
"""Enough attempts for the doubling to reach the cap."""
STEADY = RetryPolicy.exponential(3, base=0.05, jitter_ratio=0)
"""Without jitter, whatever the draw."""
TWO = RetryPolicy(schedule=(0, 5))
"""A custom schedule: two attempts, 5 s apart."""
HANDLER = None
"""A receiver handler raised: the worker asks ``retry_at`` instead of judging an HTTP answer."""


@pytest.mark.parametrize(
    ("policy", "attempt", "outcome", "draw", "verdict", "delay"),
    [
        (DISPATCH, 1, Outcome(200), MID, Verdict.DELIVERED, 0),
        (DISPATCH, 1, Outcome(204), MID, Verdict.DELIVERED, 0),
        (DISPATCH, 1, Outcome(500), MID, Verdict.RETRY, 5),
        (DISPATCH, 1, Outcome(500), LOW, Verdict.RETRY, 4),
        (DISPATCH, 1, Outcome(500), HIGH, Verdict.RETRY, 6),
        (DISPATCH, 2, Outcome(500), MID, Verdict.RETRY, 300),
        (DISPATCH, 3, Outcome(502), MID, Verdict.RETRY, 1800),
        (DISPATCH, 4, Outcome(None), MID, Verdict.RETRY, 7200),
        (DISPATCH, 5, Outcome(500), MID, Verdict.RETRY, 18000),
        (DISPATCH, 6, Outcome(500), MID, Verdict.RETRY, 36000),
        (DISPATCH, 7, Outcome(500), MID, Verdict.RETRY, 50400),
        (DISPATCH, 8, Outcome(500), MID, Verdict.RETRY, 72000),
        (DISPATCH, 9, Outcome(500), MID, Verdict.RETRY, 86400),
        (DISPATCH, 9, Outcome(500), HIGH, Verdict.RETRY, 86400 * 1.2),
        (DISPATCH, 10, Outcome(500), MID, Verdict.FAILED, 0),
        (DISPATCH, 11, Outcome(500), MID, Verdict.FAILED, 0),
        (DISPATCH, 10, Outcome(200), MID, Verdict.DELIVERED, 0),
        (DISPATCH, 1, Outcome(301), MID, Verdict.RETRY, 5),
        (DISPATCH, 1, Outcome(404), MID, Verdict.RETRY, 5),
        (DISPATCH, 1, Outcome(429), MID, Verdict.RETRY, 60),
        (DISPATCH, 1, Outcome(429, retry_after=120), MID, Verdict.RETRY, 120),
        (DISPATCH, 1, Outcome(503, retry_after=30), MID, Verdict.RETRY, 30),
        (DISPATCH, 3, Outcome(503, retry_after=30), MID, Verdict.RETRY, 1800),
        (DISPATCH, 1, Outcome(503, retry_after=10**9), MID, Verdict.RETRY, 86400),
        (DISPATCH, 1, Outcome(None, timed_out=True), LOW, Verdict.RETRY, 60),
        (DISPATCH, 4, Outcome(None, timed_out=True), MID, Verdict.RETRY, 7200),
        (DISPATCH, 1, Outcome(410), MID, Verdict.GONE, 0),
        (DISPATCH, 10, Outcome(410), MID, Verdict.GONE, 0),
        (RECEIVE, 1, HANDLER, MID, Verdict.RETRY, 1),
        (RECEIVE, 1, HANDLER, LOW, Verdict.RETRY, 0.8),
        (RECEIVE, 1, HANDLER, HIGH, Verdict.RETRY, 1.2),
        (RECEIVE, 2, HANDLER, MID, Verdict.RETRY, 2),
        (RECEIVE, 3, HANDLER, MID, Verdict.RETRY, 4),
        (RECEIVE, 4, HANDLER, HIGH, Verdict.RETRY, 9.6),
        (RECEIVE, 5, HANDLER, MID, Verdict.FAILED, 0),
        (RECEIVE, 6, HANDLER, MID, Verdict.FAILED, 0),
        (LONG, 9, HANDLER, MID, Verdict.RETRY, 256),
        (LONG, 10, HANDLER, MID, Verdict.RETRY, 300),
        (LONG, 11, HANDLER, HIGH, Verdict.RETRY, 360),
        (LONG, 12, HANDLER, MID, Verdict.FAILED, 0),
        (RetryPolicy.exponential(4, base=1.0, cap=3.0), 3, HANDLER, MID, Verdict.RETRY, 3),
        (RetryPolicy.exponential(1), 1, HANDLER, MID, Verdict.FAILED, 0),
        (STEADY, 2, HANDLER, HIGH, Verdict.RETRY, 0.1),
        (TWO, 1, Outcome(500), MID, Verdict.RETRY, 5),
        (TWO, 2, Outcome(500), MID, Verdict.FAILED, 0),
    ],
)
def test_decision_table(
    policy: RetryPolicy,
    attempt: int,
    outcome: Outcome | None,
    draw: float,
    verdict: Verdict,
    delay: float,
) -> None:
    """Each policy, attempt number and outcome maps to the documented verdict and delay."""
    policy = replace(policy, jitter=lambda: draw)
    if outcome is HANDLER:
        at = policy.retry_at(attempt, NOW)
        got = (Verdict.FAILED, 0.0) if at is None else (Verdict.RETRY, at - NOW)
    else:
        decision = policy.decide(attempt, outcome)
        got = (decision.verdict, decision.delay)
    assert got[0] is verdict
    assert got[1] == pytest.approx(delay)


@pytest.mark.parametrize(
    ("policy", "now_ms", "cutoff_ms"),
    [
        (DISPATCH, 1_000_000_000_000, 1_000_000_000_000 - 5 * 86_400_000),
        (RECEIVE, 5 * 86_400_000, 0),
        (RetryPolicy(disable_after=1.5), 10_000, 8_500),
    ],
)
def test_disable_cutoff(policy: RetryPolicy, now_ms: int, cutoff_ms: int) -> None:
    """An endpoint failing without a success since ``disable_after`` seconds ago or earlier is
    disabled: the cutoff is that many milliseconds before now."""
    assert policy.disable_cutoff(now_ms) == cutoff_ms


def test_exponential_refuses_no_attempts() -> None:
    """A policy without a single attempt is refused with a message naming the setting."""
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy.exponential(max_attempts=0)


@pytest.mark.parametrize(
    ("header", "now", "expected"),
    [
        (None, 0.0, None),
        ("120", 0.0, 120.0),
        (" 7 ", 0.0, 7.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0, 10.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490.0, 0.0),
        ("soon", 0.0, None),
        ("-5", 0.0, None),
    ],
)
def test_parse_retry_after(header: str | None, now: float, expected: float | None) -> None:
    """Retry-After is read as delta-seconds or an HTTP date; garbage is ignored."""
    assert parse_retry_after(header, now) == expected


@pytest.mark.parametrize("window", [60.0, 3600.0, DAY, 3 * DAY])
def test_a_window_fits_the_default_schedule(window: float) -> None:
    """for_window keeps the default's number of attempts and their order of waits, none under
    a second, the last attempt ``window`` seconds after the first."""
    policy = RetryPolicy.for_window(window)
    waits = policy.schedule[1:]
    assert policy.max_attempts == DISPATCH.max_attempts
    assert policy.schedule[0] == 0
    assert sum(waits) == pytest.approx(window)
    assert min(waits) >= 1.0
    assert list(waits) == sorted(waits)
    assert policy.max_retry_after == min(DAY, window)


@pytest.mark.parametrize(
    ("window", "attempt", "outcome", "draw", "verdict", "delay"),
    [
        (3 * DAY, 1, Outcome(500), MID, Verdict.RETRY, 5 * 3 * DAY / sum(DEFAULT_SCHEDULE)),
        (
            3 * DAY,
            9,
            Outcome(500),
            HIGH,
            Verdict.RETRY,
            1.2 * 86400 * 3 * DAY / sum(DEFAULT_SCHEDULE),
        ),
        (3 * DAY, 10, Outcome(500), MID, Verdict.FAILED, 0),
        (3 * DAY, 1, Outcome(429), MID, Verdict.RETRY, 60),
        (60.0, 1, Outcome(500), MID, Verdict.RETRY, 1),
        (60.0, 1, Outcome(429), MID, Verdict.RETRY, 60 / 9),
        (60.0, 1, Outcome(503, retry_after=3600), MID, Verdict.RETRY, 60),
        (60.0, 1, Outcome(410), MID, Verdict.GONE, 0),
    ],
)
def test_a_windowed_policy_decides_like_the_default(
    window: float, attempt: int, outcome: Outcome, draw: float, verdict: Verdict, delay: float
) -> None:
    """A windowed policy retries on the scaled schedule with the same jitter, throttles within
    the window and honours a Retry-After only up to it."""
    decision = RetryPolicy.for_window(window, jitter=lambda: draw).decide(attempt, outcome)
    assert (decision.verdict, decision.delay) == (verdict, pytest.approx(delay))


@pytest.mark.parametrize("window", [59.9, 0.0, -60.0, 3 * DAY + 1, float("nan"), float("inf")])
def test_a_window_outside_a_minute_to_three_days_is_refused(window: float) -> None:
    """A retry window under a minute, over three days or not a number is refused with a
    message giving the range."""
    with pytest.raises(
        ConfigError, match=r"retry window must be from 60 seconds .*\(3 days\), got"
    ):
        RetryPolicy.for_window(window)
