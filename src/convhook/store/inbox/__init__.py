"""The receiver's inbox: accepted webhooks stored byte-exact, with their handler outcome."""

from convhook.store.inbox.base import (
    Gap,
    GapKind,
    GapStatus,
    HandlerStatus,
    Inbox,
    InboxEntry,
    Progress,
    Received,
)
from convhook.store.inbox.store import DatabaseInbox, PostgresInbox, SQLiteInbox, open_inbox

__all__ = [
    "DatabaseInbox",
    "Gap",
    "GapKind",
    "GapStatus",
    "HandlerStatus",
    "Inbox",
    "InboxEntry",
    "PostgresInbox",
    "Progress",
    "Received",
    "SQLiteInbox",
    "open_inbox",
]
