"""The conversation lifecycle as a pure state machine: phases, transitions, emitted events.

A conversation's *phase* is finer than its wire ``conversationStatus``: after the user leaves
the status is still ``active`` but only ``end`` is allowed, and after the analysis the status
is still ``completed`` but nothing is allowed. No I/O here: the outbox applies a
:class:`Transition` to stored fields and records the event it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from convhook.errors import TransitionError as TransitionError  # re-exported: its old home
from convhook.events import EventType
from convhook.timefmt import format_ts


class Phase(StrEnum):
    """Where a conversation is in its lifecycle."""

    CREATED = "created"
    """Recorded; no call placed yet."""
    DIALING = "dialing"
    """The call is being placed."""
    ACTIVE = "active"
    """The user joined and is in the conversation."""
    LEFT = "left"
    """The user left; the conversation has not been ended yet."""
    ENDED = "ended"
    """The conversation completed; analysis may follow."""
    FAILED = "failed"
    """The conversation never happened (not answered, network error)."""
    ANALYSED = "analysed"
    """Post-call analysis is recorded; the conversation is final."""


class Action(StrEnum):
    """The lifecycle transitions a client can ask for."""

    DIAL = "dial"
    """Start placing the call."""
    JOIN = "join"
    """The user joined (picked up)."""
    LEAVE = "leave"
    """The user left (hung up)."""
    END = "end"
    """The conversation ended normally."""
    FAIL = "fail"
    """The conversation failed or was not answered."""
    ANALYSIS = "analysis"
    """Post-call analysis is done."""


@dataclass(frozen=True)
class Transition:
    """One allowed move: from which phases, to which phase, and which event it emits."""

    action: Action
    sources: frozenset[Phase]
    target: Phase
    event: EventType | None
    takes_slot: bool
    """True when the move puts a conversation into ``dialing``/``active`` from outside them."""


TRANSITIONS: dict[Action, Transition] = {
    t.action: t
    for t in (
        Transition(Action.DIAL, frozenset({Phase.CREATED}), Phase.DIALING, None, True),
        Transition(
            Action.JOIN,
            frozenset({Phase.CREATED, Phase.DIALING}),
            Phase.ACTIVE,
            EventType.USER_JOINED,
            True,
        ),
        Transition(Action.LEAVE, frozenset({Phase.ACTIVE}), Phase.LEFT, EventType.USER_LEFT, False),
        Transition(
            Action.END,
            frozenset({Phase.ACTIVE, Phase.LEFT}),
            Phase.ENDED,
            EventType.COMPLETED,
            False,
        ),
        Transition(
            Action.FAIL,
            frozenset({Phase.CREATED, Phase.DIALING}),
            Phase.FAILED,
            EventType.COMPLETED,
            False,
        ),
        Transition(
            Action.ANALYSIS,
            frozenset({Phase.ENDED}),
            Phase.ANALYSED,
            EventType.ANALYSIS_COMPLETED,
            False,
        ),
    )
}

# Phases whose conversations count against a workspace's concurrent-conversation limit.
BUSY_STATUSES = ("dialing", "active")


def allowed_actions(phase: Phase) -> tuple[Action, ...]:
    """The actions allowed from ``phase``, in lifecycle order."""
    return tuple(a for a, t in TRANSITIONS.items() if phase in t.sources)


def transition(conversation_id: str, phase: Phase, action: Action) -> Transition:
    """The transition for ``action`` from ``phase``, or :class:`TransitionError`."""
    move = TRANSITIONS[action]
    if phase not in move.sources:
        raise TransitionError(conversation_id, phase, action)
    return move


def apply(
    move: Transition, fields: dict[str, Any], given: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """The conversation's wire fields after ``move``: ``fields`` updated with ``given``
    (camelCase wire values from the request) and the defaults the move implies."""
    out = dict(fields)
    stamp = format_ts(now)
    out.update({k: v for k, v in given.items() if v is not None})
    match move.action:
        case Action.DIAL:
            out["callStartTime"] = given.get("callStartTime") or stamp
            out.update(conversationStatus="dialing", telephonyStatus="dialing")
        case Action.JOIN:
            joined = given.get("userJoinTime") or stamp
            out["userJoinTime"] = joined
            out["callStartTime"] = fields.get("callStartTime") or joined
            out.update(
                conversationStatus="active",
                telephonyStatus="active",
                recordingStatus="in_progress",
            )
        case Action.LEAVE:
            out["userLeaveTime"] = given.get("userLeaveTime") or stamp
        case Action.END:
            out["callEndTime"] = given.get("callEndTime") or stamp
            default_reason = "user_hangup" if fields.get("userLeaveTime") else "agent_hangup"
            out["endReason"] = given.get("endReason") or default_reason
            out.update(
                conversationStatus="completed",
                telephonyStatus="completed",
                recordingStatus="completed",
            )
        case Action.FAIL:
            out["callEndTime"] = given.get("callEndTime") or stamp
            out["endReason"] = given.get("endReason") or "user_did_not_answer"
            out["conversationStatus"] = "failed"
            if fields.get("telephonyStatus"):
                out["telephonyStatus"] = "completed"
        case Action.ANALYSIS:
            if out.get("summary") is None:
                out["summary"] = ""
    out["updatedAt"] = stamp
    return out
