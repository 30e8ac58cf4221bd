"""The receiver's inbox: accepted webhooks stored byte-exact, with their handler outcome."""

from convhook.store.inbox.base import HandlerStatus, Inbox, InboxEntry, Received
from convhook.store.inbox.store import DatabaseInbox, PostgresInbox, SQLiteInbox, open_inbox

__all__ = [
    "DatabaseInbox",
    "HandlerStatus",
    "Inbox",
    "InboxEntry",
    "PostgresInbox",
    "Received",
    "SQLiteInbox",
    "open_inbox",
]
