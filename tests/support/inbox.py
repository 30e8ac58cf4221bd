"""Receiver inboxes for tests, on either engine, with their schema in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convhook.receiver import Receiver, RetryPolicy
from convhook.signing import Secret
from convhook.store.inbox.store import DatabaseInbox, open_inbox

# A SQLite path with this prefix names an inbox that writes through a child process.
WRITER_PROCESS = "writer-process:"
FAST_RETRY = RetryPolicy.exponential(max_attempts=3, base=0.05, jitter_ratio=0.0)
"""Three attempts, 50 ms apart: a test sees an event fail for good within a second."""


def inbox_at(url: str | Path) -> DatabaseInbox:
    """An inbox at ``url`` (SQLite path, ``writer-process:`` + SQLite path, or PostgreSQL URL)
    that creates its schema on open, as `convhook db upgrade --component inbox` would for
    PostgreSQL."""
    text = str(url)
    if text.startswith(WRITER_PROCESS):
        return open_inbox(text[len(WRITER_PROCESS) :], writer="process")
    return open_inbox(url, auto_upgrade=True)


def is_postgres(url: str | Path) -> bool:
    """Whether ``url`` names a PostgreSQL database."""
    return str(url).startswith(("postgresql://", "postgres://"))


def receiver_at(url: str | Path, secret: Secret, **kwargs: Any) -> Receiver:
    """A receiver verifying with ``secret`` into a fresh inbox at ``url``, polling every
    50 ms and retrying with :data:`FAST_RETRY` unless told otherwise."""
    kwargs.setdefault("retry", FAST_RETRY)
    return Receiver([secret], inbox_at(url), poll_interval=0.05, **kwargs)
