"""The conversation state machine: which action is allowed from which phase, and its event."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from convhook.events import EventType
from convhook.lifecycle import Action, Phase, TransitionError, allowed_actions, apply, transition

ALLOWED = {
    Phase.CREATED: {Action.DIAL, Action.JOIN, Action.FAIL},
    Phase.DIALING: {Action.JOIN, Action.FAIL},
    Phase.ACTIVE: {Action.LEAVE, Action.END},
    Phase.LEFT: {Action.END},
    Phase.ENDED: {Action.ANALYSIS},
    Phase.FAILED: set(),
    Phase.ANALYSED: set(),
}
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("action", list(Action))
def test_transition_table(phase: Phase, action: Action) -> None:
    """Each action is allowed exactly from the phases in the table; others raise 409."""
    if action in ALLOWED[phase]:
        assert transition("conv_1", phase, action).action is action
    else:
        with pytest.raises(TransitionError) as info:
            transition("conv_1", phase, action)
        assert info.value.status_code == 409
        assert f"is {phase.value}" in str(info.value)
        assert set(info.value.allowed) == ALLOWED[phase]


def test_events_emitted() -> None:
    """dial emits nothing, fail and end emit completed, the others their own event."""
    assert {a: transition("c", next(iter(t.sources)), a).event for a, t in _moves()} == {
        Action.DIAL: None,
        Action.JOIN: EventType.USER_JOINED,
        Action.LEAVE: EventType.USER_LEFT,
        Action.END: EventType.COMPLETED,
        Action.FAIL: EventType.COMPLETED,
        Action.ANALYSIS: EventType.ANALYSIS_COMPLETED,
    }


def _moves() -> list[tuple[Action, object]]:
    from convhook.lifecycle import TRANSITIONS

    return list(TRANSITIONS.items())


def test_final_phases_name_nothing_allowed() -> None:
    """The 409 message of a final conversation says nothing is allowed."""
    assert allowed_actions(Phase.ANALYSED) == ()
    with pytest.raises(TransitionError, match="nothing"):
        transition("c", Phase.ANALYSED, Action.END)


def test_apply_sets_times_and_statuses() -> None:
    """Join stamps the join and start times; end after leave defaults to user_hangup; given
    times win over now."""
    joined = apply(transition("c", Phase.CREATED, Action.JOIN), {}, {}, NOW)
    assert joined["userJoinTime"] == joined["callStartTime"] == "2024-05-01T12:00:00.000Z"
    assert (joined["conversationStatus"], joined["telephonyStatus"]) == ("active", "active")
    left = apply(
        transition("c", Phase.ACTIVE, Action.LEAVE),
        joined,
        {"userLeaveTime": "2024-05-01T12:01:00.000Z"},
        NOW,
    )
    assert left["userLeaveTime"] == "2024-05-01T12:01:00.000Z"
    ended = apply(transition("c", Phase.LEFT, Action.END), left, {}, NOW)
    assert (ended["endReason"], ended["recordingStatus"]) == ("user_hangup", "completed")
    failed = apply(transition("c", Phase.DIALING, Action.FAIL), {}, {}, NOW)
    assert (failed["conversationStatus"], failed["endReason"]) == ("failed", "user_did_not_answer")
