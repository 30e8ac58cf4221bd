"""Storage: SQLite (embedded default) and PostgreSQL (scale-out); all SQL lives here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from convhook.store.engine.database import Database
from convhook.store.engine.migrations import load
from convhook.store.engine.url import DatabaseURL

if TYPE_CHECKING:
    from convhook.store.engine.database import WriterKind

__all__ = ["Database", "DatabaseURL", "open_database"]


def open_database(
    url: str | DatabaseURL,
    component: str,
    *,
    synchronous: str = "FULL",
    auto_upgrade: bool = False,
    writer: WriterKind = "thread",
    readers: int = 4,
) -> Database:
    """A (not yet opened) database for ``component`` (``producer`` or ``inbox``) at ``url``.

    SQLite files are created and upgraded on open; PostgreSQL schemas are upgraded only with
    ``auto_upgrade`` (``convhook db upgrade``) and otherwise checked. ``writer="process"``
    commits the writes in a child process; ``readers`` is the size of the pool of reading
    connections.
    """
    target = url if isinstance(url, DatabaseURL) else DatabaseURL.parse(url)
    if target.engine == "postgres":
        from convhook.store.engine.postgres import PostgresDatabase

        return PostgresDatabase(
            target.target,
            load("postgres", component),
            auto_upgrade=auto_upgrade,
            writer=writer,
            readers=readers,
        )
    from convhook.store.engine.sqlite import SQLiteDatabase

    return SQLiteDatabase(
        target.target,
        load("sqlite", component),
        synchronous=synchronous,
        writer=writer,
        readers=readers,
    )
