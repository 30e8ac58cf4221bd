"""The retry schedule: one table of (attempt, outcome, jitter) -> decision."""

from __future__ import annotations

import pytest

from convhook.retry import Decision, Outcome, RetryPolicy, Verdict, parse_retry_after

MID = 0.5  # jitter draw that leaves the delay unchanged
LOW = 0.0  # -20 %
HIGH = 1.0  # +20 %


@pytest.mark.parametrize(
    ("attempt", "outcome", "draw", "expected"),
    [
        (1, Outcome(200), MID, Decision(Verdict.DELIVERED)),
        (1, Outcome(204), MID, Decision(Verdict.DELIVERED)),
        (1, Outcome(500), MID, Decision(Verdict.RETRY, 5)),
        (1, Outcome(500), LOW, Decision(Verdict.RETRY, 4)),
        (1, Outcome(500), HIGH, Decision(Verdict.RETRY, 6)),
        (2, Outcome(500), MID, Decision(Verdict.RETRY, 300)),
        (3, Outcome(502), MID, Decision(Verdict.RETRY, 1800)),
        (4, Outcome(None), MID, Decision(Verdict.RETRY, 7200)),
        (5, Outcome(500), MID, Decision(Verdict.RETRY, 18000)),
        (6, Outcome(500), MID, Decision(Verdict.RETRY, 36000)),
        (7, Outcome(500), MID, Decision(Verdict.RETRY, 50400)),
        (8, Outcome(500), MID, Decision(Verdict.RETRY, 72000)),
        (9, Outcome(500), MID, Decision(Verdict.RETRY, 86400)),
        (9, Outcome(500), HIGH, Decision(Verdict.RETRY, 86400 * 1.2)),
        (10, Outcome(500), MID, Decision(Verdict.FAILED)),
        (11, Outcome(500), MID, Decision(Verdict.FAILED)),
        (10, Outcome(200), MID, Decision(Verdict.DELIVERED)),
        (1, Outcome(301), MID, Decision(Verdict.RETRY, 5)),
        (1, Outcome(404), MID, Decision(Verdict.RETRY, 5)),
        (1, Outcome(429), MID, Decision(Verdict.RETRY, 60)),
        (1, Outcome(429, retry_after=120), MID, Decision(Verdict.RETRY, 120)),
        (1, Outcome(503, retry_after=30), MID, Decision(Verdict.RETRY, 30)),
        (3, Outcome(503, retry_after=30), MID, Decision(Verdict.RETRY, 1800)),
        (1, Outcome(503, retry_after=10**9), MID, Decision(Verdict.RETRY, 86400)),
        (1, Outcome(None, timed_out=True), LOW, Decision(Verdict.RETRY, 60)),
        (4, Outcome(None, timed_out=True), MID, Decision(Verdict.RETRY, 7200)),
        (1, Outcome(410), MID, Decision(Verdict.GONE)),
        (10, Outcome(410), MID, Decision(Verdict.GONE)),
    ],
)
def test_decision_table(attempt: int, outcome: Outcome, draw: float, expected: Decision) -> None:
    """Each attempt number and outcome maps to the documented verdict and delay."""
    policy = RetryPolicy(jitter=lambda: draw)
    decision = policy.decide(attempt, outcome)
    assert decision.verdict is expected.verdict
    assert decision.delay == pytest.approx(expected.delay)


def test_default_schedule_has_ten_attempts_and_disables_after_five_days() -> None:
    """The default policy allows ten attempts and disables endpoints failing for 5 days."""
    policy = RetryPolicy()
    assert policy.max_attempts == 10
    assert policy.first_delay() == 0
    assert not policy.should_disable(5 * 86400 - 1)
    assert policy.should_disable(5 * 86400)


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
