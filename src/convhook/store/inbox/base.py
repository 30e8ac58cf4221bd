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


# Structs, so they cross to a writer process as they are (array_like: encoded as
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
    conversation_id: str | None = None
    """The conversation of a ``conversation.*`` event (None for other events)."""
    sequence: int | None = None
    """The event's position in its conversation (the ``convhook-sequence`` header)."""
    traceparent: str | None = None
    """The W3C ``traceparent`` it was delivered with, if valid."""
    origin: str = "delivery"
    """``delivery``, or ``reconciled`` when fetched from the producer's API to fill a gap."""


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
    conversation_id: str | None = None
    sequence: int | None = None
    traceparent: str | None = None
    origin: str = "delivery"

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
            "conversationId": self.conversation_id,
            "sequence": self.sequence,
            "origin": self.origin,
            "traceparent": self.traceparent,
        }
        if with_body:
            data["headers"] = dict(self.headers)
            try:
                data["body"] = json.loads(self.body)
            except ValueError:
                data["body"] = self.body.decode("utf-8", "replace")
        return data


class GapKind(StrEnum):
    """What the ordering of a conversation's events found."""

    GAP = "gap"
    """Sequences between the last one handled and a newer event never arrived."""
    OUT_OF_ORDER = "out_of_order"
    """An event arrived after a later one of its conversation had been handled."""


class GapStatus(StrEnum):
    """Where a recorded gap stands."""

    OPEN = "open"
    """The newer event waits while the missing ones are fetched or may still arrive."""
    FILLED = "filled"
    """Every missing event was stored and handled before the newer one."""
    UNFILLED = "unfilled"
    """The newer event was handled without (some of) them; ``reason`` says why."""
    RECORDED = "recorded"
    """An out-of-order event, noted; nothing waits for it."""


class Gap(msgspec.Struct, frozen=True, array_like=True):
    """One finding of the ordering, named by the event that revealed it."""

    event_id: str
    conversation_id: str
    kind: GapKind
    after_sequence: int | None
    before_sequence: int | None
    status: GapStatus
    reason: str | None
    filled: int
    attempts: int
    detected_at: float
    resolved_at: float | None

    @property
    def missing(self) -> str:
        """The sequences missing, as ``3`` or ``3-5`` (empty for an out-of-order event)."""
        if self.after_sequence is None or self.before_sequence is None:
            return ""
        first, last = self.after_sequence + 1, self.before_sequence - 1
        return str(first) if first == last else f"{first}-{last}"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "eventId": self.event_id,
            "conversationId": self.conversation_id,
            "kind": self.kind.value,
            "afterSequence": self.after_sequence,
            "beforeSequence": self.before_sequence,
            "missing": self.missing,
            "status": self.status.value,
            "reason": self.reason,
            "filled": self.filled,
            "attempts": self.attempts,
            "detectedAt": self.detected_at,
            "resolvedAt": self.resolved_at,
        }


class Progress(msgspec.Struct, frozen=True, array_like=True):
    """How far a conversation's events have been handled."""

    last_sequence: int
    """The highest sequence handled (0: none yet)."""
    last_rank: int
    """The lifecycle rank of the latest event type handled (0: none yet)."""


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

    # -- ordering (optional: an inbox without it handles events in arrival order) ----------

    ordered = False
    """True if this inbox implements the methods below (the receiver then orders each
    conversation's events and records gaps)."""

    async def progress(self, conversation_id: str) -> Progress:
        """How far ``conversation_id``'s events have been handled."""
        return Progress(0, 0)

    async def handled(
        self, conversation_id: str, sequence: int | None, rank: int, event_id: str, now: float
    ) -> None:
        """Note that an event of ``conversation_id`` was handled (its highest sequence and
        rank are kept)."""

    async def between(
        self, conversation_id: str, after: int, before: int
    ) -> list[tuple[int, str, HandlerStatus]]:
        """The stored events of ``conversation_id`` with ``after < sequence < before``, as
        ``(sequence, event_id, status)`` in sequence order."""
        return []

    async def note_gap(self, gap: Gap) -> Gap:
        """Record ``gap`` unless its event already revealed one; count a look for the missing
        events (``gap.attempts``) and keep the new reason; return the row as stored."""
        return gap

    async def close_gap(
        self, event_id: str, status: GapStatus, reason: str | None, filled: int, now: float
    ) -> None:
        """Settle the gap revealed by ``event_id``."""

    async def covered(self, conversation_id: str, sequence: int) -> bool:
        """True if a gap recorded for ``conversation_id`` missed ``sequence``."""
        return False

    async def gaps(
        self, status: GapStatus | None = None, limit: int = 50, conversation_id: str | None = None
    ) -> list[Gap]:
        """Recorded gaps and out-of-order events, newest first."""
        return []

    async def gaps_of(self, event_ids: Sequence[str]) -> dict[str, Gap]:
        """The gap each of ``event_ids`` revealed, if any."""
        return {}

    async def gap_counts(self) -> dict[str, int]:
        """How many gaps are in each status (``open``, ``filled``...), with out-of-order
        events as ``out_of_order``."""
        return {}

    async def defer(self, event_id: str, until: float, now: float) -> None:
        """Hand a claimed event back, due at ``until``, without counting the attempt (it waits
        for earlier events of its conversation)."""

    async def extend(self, event_ids: Sequence[str], until: float) -> None:
        """Renew the leases of events this process is still running (optional; default none)."""

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from any thread) when another process may have made work due,
        until the inbox closes (optional: by default nothing calls; workers also poll)."""
