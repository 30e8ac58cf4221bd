"""The dispatcher's two writes, claim and record-then-claim, on a writer thread or process.

:class:`ThreadWrites` runs them on the database's group-committing writer thread (the
dispatcher inside ``convhook serve``, and every PostgreSQL dispatcher); :class:`ProcessWrites`
runs them in a :class:`~convhook.store.engine.writer_process.WriterProcess` (``convhook dispatcher``
on SQLite), whose operations are in :mod:`convhook.store.delivery.wire`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convhook.errors import ClosedError, StoreError
from convhook.store.delivery import deliveries as store
from convhook.store.delivery import wire
from convhook.store.engine.database import Database
from convhook.store.engine.sqlite import SQLiteDatabase
from convhook.store.engine.writer_process import WriterProcess


class ThreadWrites:
    """The writes on ``db``'s writer thread, group-committed with its other writers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def claim(self, owner: str, now: int, lease_ms: int, limit: int) -> list[store.Claim]:
        return await self.db.write(lambda c: store.claim(c, owner, now, lease_ms, limit))

    async def record(
        self,
        results: Sequence[store.Result],
        now: int,
        disable_ms: int,
        owner: str,
        lease_ms: int,
        limit: int,
    ) -> tuple[list[str], list[store.Claim]]:
        """Record ``results``, then claim up to ``limit`` more, in one transaction; return the
        endpoints this disabled and the new claims."""

        def write(conn: Any) -> tuple[list[str], list[store.Claim]]:
            disabled = store.record(conn, results, now, disable_ms) if results else []
            claims = store.claim(conn, owner, now, lease_ms, limit) if limit else []
            return disabled, claims

        return await self.db.write(write)


class ProcessWrites:
    """The writes in a child process with a GIL of its own (see :mod:`.writer_process`)."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self.name = db.name
        self._writer = WriterProcess(db.path, wire.__name__, synchronous=db.synchronous)

    @property
    def pid(self) -> int | None:
        """The child's process id, while one runs."""
        return self._writer.pid

    async def start(self) -> None:
        await self._writer.start()

    async def close(self) -> None:
        await self._writer.close()

    async def claim(self, owner: str, now: int, lease_ms: int, limit: int) -> list[store.Claim]:
        rows = await self._call("claim", owner, now, lease_ms, limit)
        return [wire.claim_of(row) for row in rows]

    async def record(
        self,
        results: Sequence[store.Result],
        now: int,
        disable_ms: int,
        owner: str,
        lease_ms: int,
        limit: int,
    ) -> tuple[list[str], list[store.Claim]]:
        rows = [wire.result_row(r) for r in results]
        disabled, claims = await self._call("record", rows, now, disable_ms, owner, lease_ms, limit)
        return disabled, [wire.claim_of(row) for row in claims]

    async def _call(self, op: str, *args: object) -> Any:
        try:
            return await self._writer.call(op, *args)
        except ClosedError:
            raise
        except StoreError as exc:
            raise StoreError(f"{op} in {self.name} failed: {exc}") from exc


DeliveryWrites = ThreadWrites | ProcessWrites
