"""The receiver's inbox: accepted webhooks stored byte-exact, with their handler outcome.

:class:`Inbox` is the interface the receiver and its worker use; :class:`SQLiteInbox` keeps
it in a SQLite file whose writes are group-committed, so many concurrent requests share one
fsync. Every statement that touches the inbox lives in this module; a PostgreSQL inbox
implements the same methods.

Each row moves ``pending -> running -> done``, or back to ``pending`` with a later
``next_attempt_at`` when a handler raises, and to ``failed`` after the last attempt. A
``running`` row's ``next_attempt_at`` is its lease: if the process dies, the row is due
again when the lease ends (or at once when the next receiver starts, see
:meth:`Inbox.release_running`).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

from convhook.store.migrations import load
from convhook.store.sqlite import SQLiteDatabase


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


@dataclass(frozen=True)
class Received:
    """One accepted request, as the hot path stores it."""

    event_id: str
    webhook_id: str | None
    event_type: str
    body: bytes
    headers: Mapping[str, str]
    received_at: float
    claimed_until: float | None = None
    """If set, the row is stored already ``running`` (attempt 1) with this lease: the
    receiving process hands the event straight to its worker instead of claiming it."""
    done: bool = False
    """Stored as ``done`` at once: no handler matches the event type."""


@dataclass(frozen=True)
class InboxEntry:
    """One stored event and the outcome of its handlers."""

    event_id: str
    webhook_id: str | None
    event_type: str
    body: bytes
    headers: Mapping[str, str]
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


class Inbox(ABC):
    """Durable storage of received events and their handler outcome."""

    async def __aenter__(self) -> Inbox:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

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
    async def claim(self, now: float, limit: int, lease: float) -> list[InboxEntry]:
        """Mark up to ``limit`` due events ``running`` until ``now + lease`` and return them."""

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
        """Make every ``running`` event due now (after a crash); return how many."""


_COLUMNS = (
    "i.event_id, i.webhook_id, i.event_type, i.body, i.headers, i.received_at, s.status, "
    "s.attempts, s.next_attempt_at, s.handlers_done, s.last_error, s.updated_at"
)
_FROM = "FROM convhook_inbox i JOIN convhook_inbox_state s ON s.event_id = i.event_id"
_INSERT = (
    "INSERT INTO convhook_inbox (event_id, webhook_id, event_type, body, headers, received_at) "
    "VALUES "
)
_INSERT_ROW = "(?, ?, ?, ?, ?, ?)"
_INSERT_STATE = (
    "INSERT INTO convhook_inbox_state (event_id, status, attempts, next_attempt_at, updated_at) "
    "VALUES "
)
_STATE_ROW = "(?, ?, ?, ?, ?)"
# Well under SQLite's 32766 bound variables per statement.
_ROWS_PER_STATEMENT = 500
_CLAIM = (
    "UPDATE convhook_inbox_state SET status = 'running', attempts = attempts + 1, "
    "next_attempt_at = ?, updated_at = ? WHERE event_id IN ("
    "SELECT event_id FROM convhook_inbox_state WHERE status IN ('pending', 'running') "
    "AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?) RETURNING event_id"
)


T_in = TypeVar("T_in")
R = TypeVar("R")


class _Coalescer(Generic[T_in, R]):
    """Turns the calls made while a write is waiting into ONE write job.

    Each job's SAVEPOINT and each statement release and retake the GIL; one statement for a
    whole batch keeps the writer thread from competing with the event loop per event.
    """

    def __init__(
        self, db: SQLiteDatabase, run: Callable[[sqlite3.Connection, list[T_in]], list[R]]
    ) -> None:
        self._db = db
        self._run = run
        self._lock = threading.Lock()
        self._items: list[tuple[T_in, asyncio.Future[R]]] = []
        self._queued = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T_in) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._items.append((item, future))
            start, self._queued = not self._queued, True
        if start:
            task = asyncio.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def _take(self) -> list[tuple[T_in, asyncio.Future[R]]]:
        with self._lock:
            taken, self._items, self._queued = self._items, [], False
        return taken

    async def _flush(self) -> None:
        taken: list[tuple[T_in, asyncio.Future[R]]] = []

        def job(conn: sqlite3.Connection) -> list[R]:
            # Taken on the writer thread, so items added until the batch starts join it.
            taken.extend(self._take())
            return self._run(conn, [item for item, _ in taken])

        try:
            results = await self._db.write(job)
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            if not taken:
                taken = self._take()
            for _, future in taken:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(taken, results, strict=True):
            if not future.done():
                future.set_result(result)


def _insert(conn: sqlite3.Connection, items: list[Received]) -> list[bool]:
    """Insert new events in as few statements as possible; True for each one inserted."""
    seen_events: set[str] = set()
    seen_hooks: set[str] = set()
    first: list[bool] = []
    unique: list[Received] = []
    for item in items:
        hook = item.webhook_id
        repeat = item.event_id in seen_events or (hook is not None and hook in seen_hooks)
        first.append(not repeat)
        if not repeat:
            seen_events.add(item.event_id)
            if hook is not None:
                seen_hooks.add(hook)
            unique.append(item)
    inserted: set[str] = set()
    for at in range(0, len(unique), _ROWS_PER_STATEMENT):
        chunk = unique[at : at + _ROWS_PER_STATEMENT]
        sql = (
            _INSERT
            + ", ".join([_INSERT_ROW] * len(chunk))
            + " ON CONFLICT DO NOTHING RETURNING event_id"
        )
        params: list[Any] = []
        for r in chunk:
            headers = json.dumps(dict(r.headers), separators=(",", ":"))
            params += (r.event_id, r.webhook_id, r.event_type, r.body, headers, r.received_at)
        new = {row[0] for row in conn.execute(sql, params)}
        if not new:
            continue
        inserted |= new
        states: list[Any] = []
        for r in chunk:
            if r.event_id in new:
                if r.done:
                    states += (r.event_id, "done", 0, None, r.received_at)
                elif r.claimed_until is None:
                    states += (r.event_id, "pending", 0, r.received_at, r.received_at)
                else:
                    states += (r.event_id, "running", 1, r.claimed_until, r.received_at)
        conn.execute(_INSERT_STATE + ", ".join([_STATE_ROW] * len(new)), states)
    return [is_first and r.event_id in inserted for is_first, r in zip(first, items, strict=True)]


def _complete(conn: sqlite3.Connection, items: list[tuple[str, str, float]]) -> list[None]:
    """Mark events done, one statement per distinct set of succeeded handlers."""
    groups: dict[str, list[str]] = {}
    now = 0.0
    for event_id, done, at in items:
        groups.setdefault(done, []).append(event_id)
        now = max(now, at)
    for done, ids in groups.items():
        for at in range(0, len(ids), _ROWS_PER_STATEMENT):
            chunk = ids[at : at + _ROWS_PER_STATEMENT]
            conn.execute(
                "UPDATE convhook_inbox_state SET status = 'done', next_attempt_at = NULL, "
                "handlers_done = ?, last_error = NULL, updated_at = ? "
                f"WHERE event_id IN ({', '.join('?' * len(chunk))})",
                [done, now, *chunk],
            )
    return [None] * len(items)


def _entry(row: sqlite3.Row) -> InboxEntry:
    return InboxEntry(
        event_id=row["event_id"],
        webhook_id=row["webhook_id"],
        event_type=row["event_type"],
        body=bytes(row["body"]),
        headers=json.loads(row["headers"]),
        received_at=row["received_at"],
        status=HandlerStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        handlers_done=tuple(json.loads(row["handlers_done"])),
        last_error=row["last_error"],
        updated_at=row["updated_at"],
    )


class SQLiteInbox(Inbox):
    """The inbox in a SQLite file (WAL, group commit, ``synchronous=FULL`` by default)."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.db = SQLiteDatabase(self.path, load("sqlite", "inbox"), synchronous=synchronous)
        self._adds: _Coalescer[Received, bool] = _Coalescer(self.db, _insert)
        self._completions: _Coalescer[tuple[str, str, float], None] = _Coalescer(self.db, _complete)

    def __repr__(self) -> str:
        return f"SQLiteInbox({str(self.path)!r})"

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def add(self, received: Received) -> bool:
        return await self._adds.submit(received)

    async def claim(self, now: float, limit: int, lease: float) -> list[InboxEntry]:
        def claim(conn: sqlite3.Connection) -> list[InboxEntry]:
            ids = [r[0] for r in conn.execute(_CLAIM, (now + lease, now, now, limit))]
            if not ids:
                return []
            rows = conn.execute(
                f"SELECT {_COLUMNS} {_FROM} WHERE i.event_id IN ({', '.join('?' * len(ids))})",
                ids,
            )
            return [_entry(r) for r in rows]

        entries = await self.db.write(claim)
        entries.sort(key=lambda e: e.received_at)
        return entries

    async def next_due(self) -> float | None:
        def due(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT min(next_attempt_at) FROM convhook_inbox_state "
                "WHERE status IN ('pending', 'running')"
            ).fetchone()
            value: float | None = row[0]
            return value

        return await self.db.read(due)

    async def complete(self, event_id: str, now: float, handlers_done: Sequence[str]) -> None:
        await self._completions.submit((event_id, json.dumps(list(handlers_done)), now))

    async def fail(
        self,
        event_id: str,
        now: float,
        error: str,
        handlers_done: Sequence[str],
        retry_at: float | None,
    ) -> None:
        status = HandlerStatus.PENDING if retry_at is not None else HandlerStatus.FAILED
        args = (status.value, retry_at, json.dumps(list(handlers_done)), error, now, event_id)

        def fail(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE convhook_inbox_state SET status = ?, next_attempt_at = ?, handlers_done = ?, "
                "last_error = ?, updated_at = ? WHERE event_id = ?",
                args,
            )

        await self.db.write(fail)

    async def get(self, event_id: str) -> InboxEntry | None:
        def get(conn: sqlite3.Connection) -> InboxEntry | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} {_FROM} WHERE i.event_id = ?", (event_id,)
            ).fetchone()
            return None if row is None else _entry(row)

        return await self.db.read(get)

    async def recent(
        self, status: HandlerStatus | None = None, limit: int = 50
    ) -> list[InboxEntry]:
        def select(conn: sqlite3.Connection) -> list[InboxEntry]:
            if status is None:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} {_FROM} ORDER BY i.rowid DESC LIMIT ?",
                    (limit,),
                )
            else:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} {_FROM} WHERE s.status = ? ORDER BY i.rowid DESC LIMIT ?",
                    (status.value, limit),
                )
            return [_entry(r) for r in rows]

        return await self.db.read(select)

    async def requeue(self, event_ids: Sequence[str], now: float) -> list[str]:
        ids = list(event_ids)

        def requeue(conn: sqlite3.Connection) -> list[str]:
            found = []
            for event_id in ids:
                row = conn.execute(
                    "UPDATE convhook_inbox_state SET "
                    "handlers_done = CASE WHEN status = 'done' THEN '[]' ELSE handlers_done END, "
                    "status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? "
                    "WHERE event_id = ? RETURNING event_id",
                    (now, now, event_id),
                ).fetchone()
                if row is not None:
                    found.append(row[0])
            return found

        return await self.db.write(requeue)

    async def failed_ids(self, limit: int = 1000) -> list[str]:
        def select(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT s.event_id FROM convhook_inbox_state s JOIN convhook_inbox i "
                "ON i.event_id = s.event_id WHERE s.status = 'failed' "
                "ORDER BY i.rowid LIMIT ?",
                (limit,),
            )
            return [r[0] for r in rows]

        return await self.db.read(select)

    async def release_running(self, now: float) -> int:
        def release(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE convhook_inbox_state SET status = 'pending', next_attempt_at = ?, "
                "updated_at = ? WHERE status = 'running'",
                (now, now),
            ).rowcount

        return await self.db.write(release)
