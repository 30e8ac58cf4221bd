"""The one seam between store code and the two engines: a connection protocol and its dialect.

Store code is written against :class:`Connection`: ``execute(sql, params)`` with ``?`` or
``:name`` placeholders, rows readable by position and by column name, as
:class:`sqlite3.Connection` has them. The PostgreSQL connection adapts only the placeholder
spelling to psycopg's; every statement whose SQL differs between the engines is written once
per dialect as a :class:`PerDialect` query and picked with ``conn.dialect``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines, known from the connection itself."""

    name: Literal["sqlite", "postgres"]
    integrity_error: type[Exception]
    """The driver's exception for a violated unique, foreign-key or check constraint."""
    shared: bool
    """Many processes write at once (row locks, ``SKIP LOCKED``, ``NOTIFY``); SQLite's
    single writer is exclusive for the length of its transaction."""


class Cursor(Protocol):
    """The part of a DB-API cursor store code uses."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A connection of either engine, as store code sees it."""

    @property
    def dialect(self) -> Dialect: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...

    lone: bool
    """True while the group commit runs a write alone in its transaction (see
    :meth:`pipeline`'s ``final``)."""

    def pipeline(self, *, final: bool = False) -> AbstractContextManager[Any]:
        """A block whose statements go to the server without waiting for each answer
        (PostgreSQL's pipeline mode: one round trip for the block, cursors readable after it;
        a failed statement raises at its end). SQLite runs in process: a no-op.

        ``final``: the write's last statements, after which nothing it does can fail. When the
        write is alone in its transaction (:attr:`lone`), the COMMIT goes in the same round
        trip, and the group commit's own COMMIT is then not sent."""
        ...

    def release(self) -> None:
        """Let go of the cursors the last write batch or read made, on the thread that made
        them (SQLite; see :class:`~convhook.store.engine.sqlite.SQLiteConnection`)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PerDialect:
    """One named statement written for each engine (where their SQL differs)."""

    sqlite: str
    postgres: str

    def of(self, conn: Connection) -> str:
        """The statement for ``conn``'s engine."""
        return self.postgres if conn.dialect.name == "postgres" else self.sqlite
