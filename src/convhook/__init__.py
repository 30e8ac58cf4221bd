"""convhook: conversation-event webhooks for AI voice and chat agent platforms."""

from __future__ import annotations

__version__ = "0.1.0"

from convhook.errors import (
    ClosedError,
    ConfigError,
    ConvhookError,
    PayloadError,
    PayloadTooLarge,
    SchemaVersionError,
    SecretError,
    SignatureError,
    StoreError,
)
from convhook.events import (
    AnalysisCompleted,
    AnyEvent,
    Completed,
    Conversation,
    ConversationEvent,
    ConversationStatus,
    ConversationType,
    Customer,
    EndReason,
    EventType,
    RecordingStatus,
    TelephonyStatus,
    TelephonyType,
    UnknownEvent,
    UserJoined,
    UserLeft,
    event_from_dict,
    parse_event,
)
from convhook.signing import Secret, Verifier, sign

__all__ = [
    "AnalysisCompleted",
    "AnyEvent",
    "ClosedError",
    "Completed",
    "ConfigError",
    "Conversation",
    "ConversationEvent",
    "ConversationStatus",
    "ConversationType",
    "ConvhookError",
    "Customer",
    "EndReason",
    "EventType",
    "PayloadError",
    "PayloadTooLarge",
    "RecordingStatus",
    "SchemaVersionError",
    "Secret",
    "SecretError",
    "SignatureError",
    "StoreError",
    "TelephonyStatus",
    "TelephonyType",
    "UnknownEvent",
    "UserJoined",
    "UserLeft",
    "Verifier",
    "__version__",
    "event_from_dict",
    "parse_event",
    "sign",
]
