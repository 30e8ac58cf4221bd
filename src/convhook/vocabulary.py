"""The wire's enumerations: event types, statuses, end reasons and the like.

Each member is documented with what it means on the platform; :mod:`convhook.events` parses
unknown values leniently and refuses them on emission.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ConversationStatus",
    "ConversationType",
    "EndReason",
    "EventType",
    "OperationalEventType",
    "RecordingStatus",
    "TelephonyStatus",
    "TelephonyType",
]


class EventType(StrEnum):
    """The conversation lifecycle events, in lifecycle order."""

    USER_JOINED = "conversation.userJoined"
    """A user joins a conversation (picks up the call)."""
    USER_LEFT = "conversation.userLeft"
    """The user leaves the conversation (hangs up)."""
    COMPLETED = "conversation.completed"
    """The conversation has ended."""
    ANALYSIS_COMPLETED = "conversation.analysisCompleted"
    """Post-call analysis of the conversation is done."""


class OperationalEventType(StrEnum):
    """convhook's own events about delivery, whose subject is an endpoint, not a conversation.

    Apart from :class:`EventType`: an endpoint subscribed to every type (``eventTypes`` null)
    still gets only conversation events, so a receiver that knows the platform's shapes alone
    never sees these; an endpoint gets them by listing them.
    """

    ENDPOINT_DISABLED = "endpoint.disabled"
    """An endpoint stopped receiving: it answered 410, failed for too long, or was disabled."""
    ENDPOINT_ENABLED = "endpoint.enabled"
    """A disabled endpoint was enabled again through the API or the CLI."""
    ENDPOINT_RECOVERED = "endpoint.recovered"
    """An endpoint that was failing took a delivery again (its first success since)."""
    DELIVERY_FAILED = "delivery.failed"
    """A delivery of a conversation event ended failed: its retries were spent, or refused."""


class ConversationStatus(StrEnum):
    """Where a conversation is in its life."""

    CREATED = "created"
    """Recorded, not yet queued for a call."""
    QUEUED = "queued"
    """Waiting for a free line."""
    DIALING = "dialing"
    """The call is being placed."""
    ACTIVE = "active"
    """The user is in the conversation."""
    COMPLETED = "completed"
    """The conversation ended normally."""
    FAILED = "failed"
    """The conversation never happened (not answered, network error)."""


class TelephonyType(StrEnum):
    """Direction of a phone call."""

    INBOUND = "inbound"
    """The user called the agent."""
    OUTBOUND = "outbound"
    """The agent called the user."""


class TelephonyStatus(StrEnum):
    """State of the call leg; free text on the platform, so other values are kept."""

    DIALING = "dialing"
    """Ringing."""
    ACTIVE = "active"
    """Connected."""
    COMPLETED = "completed"
    """Hung up."""


class EndReason(StrEnum):
    """Why a conversation ended."""

    USER_DID_NOT_ANSWER = "user_did_not_answer"
    """The call was never picked up."""
    USER_HANGUP = "user_hangup"
    """The user hung up."""
    USER_INACTIVITY = "user_inactivity"
    """The user stopped responding."""
    AGENT_HANGUP = "agent_hangup"
    """The agent ended the call."""
    NETWORK_ERROR = "network_error"
    """The connection failed."""
    MAX_DURATION_EXCEEDED = "max_duration_exceeded"
    """The call hit its time limit."""
    TIMEOUT = "timeout"
    """convhook ended it: no transition came within its phase's limit (the watchdog)."""


class RecordingStatus(StrEnum):
    """State of the call recording."""

    IN_PROGRESS = "in_progress"
    """Recording."""
    COMPLETED = "completed"
    """The recording is finished and available."""


class ConversationType(StrEnum):
    """The channel of a conversation."""

    CHAT = "chat"
    """Text chat."""
    TELEPHONY = "telephony"
    """A phone call."""
    WEB = "web"
    """A browser voice session."""
