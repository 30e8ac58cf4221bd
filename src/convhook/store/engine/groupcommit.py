"""The group commit: many writes, one transaction, one fsync.

Both writers run their batches here: the writer thread of a
:class:`~convhook.store.engine.database.Database` and the writer process
(:mod:`convhook.store.engine.writer_process`). Each write runs in its own SAVEPOINT, so one that
raises is rolled back alone while the others commit; the callers hear of their writes only
after the COMMIT, so an answered write means "committed".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from convhook.errors import StoreError
from convhook.store.engine.connection import Connection

log = logging.getLogger("convhook.store")

# Called once with a write's outcome: (True, result) after its commit, or (False, error).
Resolve = Callable[[bool, Any], None]


# Not frozen: one is built per write, and a frozen dataclass sets each field through
# object.__setattr__.
@dataclass(slots=True)
class Job:
    """One write of a batch: ``op(conn, *args)``, and where its outcome goes."""

    op: Callable[..., Any]
    args: tuple[Any, ...]
    resolve: Resolve
    outcome: tuple[bool, Any] = field(default=(False, None))
    take: Callable[[], tuple[Any, ...]] | None = None
    """Set for a write whose arguments are taken when it starts to run, inside the batch's
    transaction (``args`` is then ignored): what callers add until then joins this write,
    including while the batch's BEGIN and earlier writes wait for the database."""

    def arguments(self) -> tuple[Any, ...]:
        """The write's arguments, taken now if they are taken late (once)."""
        if self.take is not None:
            self.args, self.take = self.take(), None
        return self.args


@dataclass(frozen=True)
class GroupCommit:
    """Runs batches of writes on one engine's connections."""

    name: str
    """Where the data lives, for messages (never a password)."""
    begin: str
    """The statement that opens a batch (SQLite: ``BEGIN IMMEDIATE``)."""
    driver_error: type[BaseException]
    is_disconnect: Callable[[BaseException], bool] = field(default=lambda exc: False)

    def run(self, conn: Connection, batch: Sequence[Job]) -> bool:
        """Run ``batch`` in one transaction and set each job's outcome; False when the
        connection was lost (it is closed then: open another for the next batch)."""
        try:
            return self._run(conn, batch)
        finally:
            # Before the outcomes go to their callers' threads (see SQLiteConnection).
            conn.release()

    def _run(self, conn: Connection, batch: Sequence[Job]) -> bool:
        try:
            conn.execute(self.begin)
            if len(batch) == 1:
                # Alone in its transaction a write needs no savepoint: a failure rolls the
                # transaction back. That saves two statements (two round trips on PostgreSQL)
                # whenever writes are not arriving concurrently.
                job = batch[0]
                conn.lone = True
                try:
                    job.outcome = (True, job.op(conn, *job.arguments()))
                except BaseException as exc:  # handed to the caller
                    if self._lost(exc):
                        raise
                    conn.execute("ROLLBACK")
                    job.outcome = (False, self.wrap(exc))
                else:
                    conn.execute("COMMIT")  # not sent again if a final pipeline carried it
                finally:
                    conn.lone = False
            else:
                self._with_savepoints(conn, batch)
                conn.execute("COMMIT")
        except self.driver_error as exc:
            return self._failed(conn, batch, exc)
        return True

    def _with_savepoints(self, conn: Connection, batch: Sequence[Job]) -> None:
        for job in batch:
            conn.execute("SAVEPOINT job")
            try:
                job.outcome = (True, job.op(conn, *job.arguments()))
                conn.execute("RELEASE SAVEPOINT job")
            except BaseException as exc:  # handed to the caller
                if self._lost(exc):
                    raise
                conn.execute("ROLLBACK TO SAVEPOINT job")
                conn.execute("RELEASE SAVEPOINT job")
                job.outcome = (False, self.wrap(exc))

    def _lost(self, exc: BaseException) -> bool:
        return isinstance(exc, self.driver_error) and self.is_disconnect(exc)

    def _failed(self, conn: Connection, batch: Sequence[Job], exc: BaseException) -> bool:
        log.warning(
            "batch of %d writes to %s failed: %s",
            len(batch),
            self.name,
            exc,
            extra={"action": "batch_failed"},
        )
        alive = not self.is_disconnect(exc)
        with contextlib.suppress(Exception):
            if alive:
                conn.execute("ROLLBACK")
            else:
                conn.close()
        failure = StoreError(f"commit to {self.name} failed: {exc}; retry the request")
        failure.__cause__ = exc
        fail(batch, failure)
        return alive

    def wrap(self, exc: BaseException) -> BaseException:
        """A write's own exception as its caller gets it: driver errors become
        :class:`StoreError` (the driver's as the cause), others pass unchanged."""
        if isinstance(exc, self.driver_error):
            err = StoreError(f"write to {self.name} failed: {exc}")
            err.__cause__ = exc
            return err
        return exc


class Link:
    """A writer's connection: runs each batch on it with ``commit``, and opens a new one for
    the next batch after a lost connection (until then, that batch fails as retryable)."""

    def __init__(
        self, commit: GroupCommit, connect: Callable[[], Connection], conn: Connection | None
    ) -> None:
        self.commit = commit
        self._connect = connect
        self.conn = conn

    def run(self, batch: Sequence[Job]) -> None:
        """Run ``batch`` in one transaction; each job's outcome is set."""
        if self.conn is None:
            try:
                self.conn = self._connect()
            except self.commit.driver_error as exc:
                failure = StoreError(f"cannot reconnect to {self.commit.name}: {exc}; retry")
                failure.__cause__ = exc
                fail(batch, failure)
                return
        if not self.commit.run(self.conn, batch):
            self.conn = None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def fail(batch: Sequence[Job], failure: BaseException) -> None:
    """Fail every write of ``batch``; one taking its arguments late takes them now, so the
    callers waiting on them hear the failure too."""
    for job in batch:
        job.arguments()
        job.outcome = (False, failure)
