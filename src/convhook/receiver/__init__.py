"""Receive conversation webhooks: verify, validate, store durably, then run handlers.

Importing this package never imports the producer side (API, dispatcher, outbox).
"""

from __future__ import annotations

from convhook.receiver.app import ReceiverApp
from convhook.receiver.handlers import CATCH_ALL, Delivery, Handler
from convhook.receiver.ordering import RANKS
from convhook.receiver.receiver import FORWARDED_HEADERS, Receiver
from convhook.receiver.reconcile import Reconcile
from convhook.receiver.replies import RECEIVED, Reply
from convhook.receiver.worker import Worker
from convhook.retry import RetryPolicy
from convhook.store.inbox import Gap, GapKind, GapStatus, HandlerStatus, Inbox, InboxEntry
from convhook.store.inbox.store import DatabaseInbox, PostgresInbox, SQLiteInbox, open_inbox

__all__ = [
    "CATCH_ALL",
    "FORWARDED_HEADERS",
    "RANKS",
    "RECEIVED",
    "DatabaseInbox",
    "Delivery",
    "Gap",
    "GapKind",
    "GapStatus",
    "Handler",
    "HandlerStatus",
    "Inbox",
    "InboxEntry",
    "PostgresInbox",
    "Receiver",
    "ReceiverApp",
    "Reconcile",
    "Reply",
    "RetryPolicy",
    "SQLiteInbox",
    "Worker",
    "open_inbox",
]
