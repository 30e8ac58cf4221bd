"""The receiver's inbox: accepted webhooks stored byte-exact, with their handler outcome.

:class:`Inbox` is the interface the receiver and its worker use; its implementation on either
database engine is in :mod:`convhook.store.inbox.store`.

Each row moves ``pending -> running -> done``, or back to ``pending`` with a later
``next_attempt_at`` when a handler raises, and to ``failed`` after the last attempt (also
when that attempt never recorded an outcome: see :meth:`Inbox.claim`). A
``running`` row's ``next_attempt_at`` is its lease: if the process dies, the row is due
again when the lease ends. A process that runs handlers renews the leases it holds
(:meth:`Inbox.extend`). On an exclusive inbox (SQLite) the next receiver to start also makes
every ``running`` row due at once (:meth:`Inbox.release_running`); on a shared one (PostgreSQL)
that would steal events other live processes are running, so only leases count there.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

import msgspec

from convhook.store.engine.resource import Resource


class HandlerStatus(StrEnum):
    """Where an event's handlers stand."""

    PENDING = "pending"
    """Stored; handlers have not run yet or will be retried at ``next_attempt_at``."""
    RUNNING = "running"
    """A worker is running the handlers now (until its lease ends)."""
    DONE = "done"
    """Every matching handler succeeded."""
    FAILED = "failed"
    """A handler still failed after the last attempt; ``convhook inbox replay`` retries it."""


# Structs, so they cross to a SQLite writer process as they are (array_like: encoded as
# arrays, without field names); not frozen, as one is built per accepted request.
class Received(msgspec.Struct, array_like=True):
    """One accepted request, as the hot path stores it (treat it as read-only)."""

    event_id: str
    webhook_id: str | None
    event_type: str
    body: bytes
    headers: dict[str, str]
    received_at: float
    claimed_until: float | None = None
    """If set, the row is stored already ``running`` (attempt 1) with this lease: the
    receiving process hands the event straight to its worker instead of claiming it."""
    done: bool = False
    """Stored as ``done`` at once: no handler matches the event type."""


class InboxEntry(msgspec.Struct, frozen=True, array_like=True):
    """One stored event and the outcome of its handlers."""

    event_id: str
    webhook_id: str | None
    event_type: str
    body: bytes
    headers: dict[str, str]
    received_at: float
    status: HandlerStatus
    attempts: int
    next_attempt_at: float | None
    handlers_done: tuple[str, ...]
    last_error: str | None
    updated_at: float

    def as_dict(self, *, with_body: bool = False) -> dict[str, Any]:
        """A JSON-ready view (the body decoded as JSON when asked and possible)."""
        data: dict[str, Any] = {
            "eventId": self.event_id,
            "webhookId": self.webhook_id,
            "eventType": self.event_type,
            "receivedAt": self.received_at,
            "status": self.status.value,
            "attempts": self.attempts,
            "nextAttemptAt": self.next_attempt_at,
            "handlersDone": list(self.handlers_done),
            "lastError": self.last_error,
            "updatedAt": self.updated_at,
        }
        if with_body:
            data["headers"] = dict(self.headers)
            try:
                data["body"] = json.loads(self.body)
            except ValueError:
                data["body"] = self.body.decode("utf-8", "replace")
        return data


class Inbox(Resource):
    """Durable storage of received events and their handler outcome."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    @abstractmethod
    async def close(self) -> None:
        """Finish queued writes and disconnect."""

    @abstractmethod
    async def add(self, received: Received) -> bool:
        """Store an event durably; False if its eventId or webhook-id was already stored.

        Concurrent calls share one commit.
        """

    @abstractmethod
    async def claim(
        self, now: float, limit: int, lease: float, *, max_attempts: int | None = None
    ) -> list[InboxEntry]:
        """Mark up to ``limit`` due events ``running`` until ``now + lease`` and return them.

        With ``max_attempts``, a due event that already had one attempt more than that is
        marked ``failed`` instead: only attempts that recorded no outcome (the process
        stopped or died, or recording failed) leave an event due with its attempts spent,
        and each earns one more try, so an acknowledged event that never ran is not failed
        unrun and an event that kills its process is not claimed forever.
        """

    @abstractmethod
    async def next_due(self) -> float | None:
        """The earliest ``next_attempt_at`` of work still to do, or None if there is none."""

    @abstractmethod
    async def complete(self, event_id: str, now: float, handlers_done: Sequence[str]) -> None:
        """Record that every handler of ``event_id`` succeeded."""

    @abstractmethod
    async def fail(
        self,
        event_id: str,
        now: float,
        error: str,
        handlers_done: Sequence[str],
        retry_at: float | None,
    ) -> None:
        """Record a failed attempt: pending again at ``retry_at``, or ``failed`` if None."""

    @abstractmethod
    async def get(self, event_id: str) -> InboxEntry | None:
        """One stored event, or None."""

    @abstractmethod
    async def recent(
        self, status: HandlerStatus | None = None, limit: int = 50
    ) -> list[InboxEntry]:
        """The newest events first, optionally only those with ``status``."""

    @abstractmethod
    async def requeue(self, event_ids: Sequence[str], now: float) -> list[str]:
        """Make events due now with fresh attempts; return the ids that exist.

        A ``failed`` event keeps the handlers that already succeeded (they are not run
        again); a ``done`` event runs all its handlers again.
        """

    @abstractmethod
    async def failed_ids(self, limit: int = 1000) -> list[str]:
        """The ids of ``failed`` events, oldest first."""

    @abstractmethod
    async def release_running(self, now: float) -> int:
        """Make every ``running`` event due now (after a crash); return how many.

        A shared inbox (several receiving processes) releases nothing and returns 0: its
        ``running`` events may belong to live processes, and expired leases make the others due.
        """

    async def extend(self, event_ids: Sequence[str], until: float) -> None:
        """Renew the leases of events this process is still running (optional; default none)."""

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from any thread) when another process may have made work due,
        until the inbox closes (optional: by default nothing calls; workers also poll)."""
