"""The group commit: many writes, one transaction, one fsync.

Both writers run their batches here: the writer thread of a
:class:`~convhook.store.engine.database.Database` and the SQLite writer process
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
    merge: bool = False
    """A batched write ``op(conn, items) -> results``: a writer may run it together with the
    other waiting ones of the same ``op`` (see :func:`merged`)."""


def merged(jobs: list[Job]) -> tuple[list[Job], Callable[[], None]]:
    """The jobs to run, the batched writes of each op joined into one (one savepoint and one
    statement per op, not per batch of items), and a function that hands each joined job's
    share of the outcome back to it once they ran.

    A joined write runs where the first of its parts was queued. The parts were all waiting
    at once, none answered yet, so no caller can have ordered one after another.
    """
    runs: list[Job] = []
    groups: dict[Callable[..., Any], tuple[Job, list[Job]]] = {}
    for job in jobs:
        if not job.merge:
            runs.append(job)
            continue
        group = groups.get(job.op)
        if group is None:
            group = groups[job.op] = (Job(job.op, ([],), _unused), [])
            runs.append(group[0])
        group[0].args[0].extend(job.args[0])
        group[1].append(job)

    def split() -> None:
        for joined, parts in groups.values():
            ok, value = joined.outcome
            at = 0
            for part in parts:
                size = len(part.args[0])
                part.outcome = (True, value[at : at + size]) if ok else (False, value)
                at += size

    return runs, split


def _unused(ok: bool, value: Any) -> None:
    """A joined job is answered through its parts."""


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
            conn.execute(self.begin)
            if len(batch) == 1:
                # Alone in its transaction a write needs no savepoint: a failure rolls the
                # transaction back. That saves two statements (two round trips on PostgreSQL)
                # whenever writes are not arriving concurrently.
                job = batch[0]
                try:
                    job.outcome = (True, job.op(conn, *job.args))
                except BaseException as exc:  # handed to the caller
                    if self._lost(exc):
                        raise
                    conn.execute("ROLLBACK")
                    job.outcome = (False, self.wrap(exc))
                else:
                    conn.execute("COMMIT")
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
                job.outcome = (True, job.op(conn, *job.args))
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
        for job in batch:
            job.outcome = (False, failure)
        return alive

    def wrap(self, exc: BaseException) -> BaseException:
        """A write's own exception as its caller gets it: driver errors become
        :class:`StoreError` (the driver's as the cause), others pass unchanged."""
        if isinstance(exc, self.driver_error):
            err = StoreError(f"write to {self.name} failed: {exc}")
            err.__cause__ = exc
            return err
        return exc
