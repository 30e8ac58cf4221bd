"""PostgreSQL: the scale-out engine, for many API and dispatcher processes on many machines.

Store code is shared with SQLite through the :class:`~convhook.store.engine.connection.Connection`
protocol: :class:`PgConnection` gives psycopg that shape, and converts only the placeholder
spelling (``?`` and ``:name`` to ``%s`` and ``%(name)s``); statements that differ between the
engines are written per dialect. Writes are group-committed like SQLite's. A lost connection
(server restarted) fails the batch in flight with a :class:`StoreError` and the next batch
reconnects, so callers retry rather than hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql as pgsql

from convhook.errors import SchemaVersionError
from convhook.store.engine.connection import Cursor, Dialect
from convhook.store.engine.database import Database, Unwatch, WriterKind
from convhook.store.engine.groupcommit import GroupCommit
from convhook.store.engine.migrations import Migration, latest, record_version

log = logging.getLogger("convhook.store.postgres")

POSTGRES = Dialect("postgres", psycopg.errors.IntegrityError, shared=True)

_TOKEN = re.compile(r"'(?:[^']|'')*'|::|:([A-Za-z_]\w*)|\?|%")


@functools.lru_cache(maxsize=1024)
def placeholders(sql: str) -> bytes:
    """``sql`` with psycopg's placeholders (cached: statements are constants)."""

    def placeholder(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        if m.group(1):
            return f"%({m.group(1)})s"
        return token.replace("%", "%%")  # a string literal or a :: cast

    return _TOKEN.sub(placeholder, sql).encode()


class PgRow(tuple[Any, ...]):
    """A row readable by position and by column name, like :class:`sqlite3.Row`."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> PgRow:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


class PgCursor:
    """The part of a DB-API cursor the stores use."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        # Read when rows are: inside a pipeline the description arrives with the results.
        return {c.name: i for i, c in enumerate(self._cursor.description or [])}

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int:
        raise NotImplementedError("use INSERT ... RETURNING: PostgreSQL has no lastrowid")

    def fetchone(self) -> PgRow | None:
        row = self._cursor.fetchone() if self._cursor.description else None
        return None if row is None else PgRow(row, self._index)

    def fetchall(self) -> list[PgRow]:
        if not self._cursor.description:
            return []
        return [PgRow(r, self._index) for r in self._cursor.fetchall()]

    def __iter__(self) -> Iterator[PgRow]:
        return iter(self.fetchall())


class _NoRows:
    """The cursor of a statement that returns nothing (and of one not sent yet)."""

    rowcount = -1

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())


_NO_ROWS = _NoRows()


class PgConnection:
    """A psycopg connection with the ``execute`` shape of :class:`sqlite3.Connection`."""

    dialect = POSTGRES

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn
        self.lone = False
        self._begin = False
        self._committed = False  # a final pipeline carried the transaction's COMMIT

    def execute(self, statement: str, params: Any = ()) -> Cursor:
        if self._committed and statement in ("COMMIT", "ROLLBACK"):
            self._committed = False
            return _NO_ROWS  # sent already, with the write's final pipeline
        if statement == "BEGIN":
            # Sent with the transaction's first statement, in the same round trip: every
            # write batch and every read saves one.
            self._begin = True
            return _NO_ROWS
        if self._begin:
            self._begin = False
            if statement in ("COMMIT", "ROLLBACK"):
                return _NO_ROWS  # nothing was sent: nothing to end
            with self._with_begin():
                return self.execute(statement, params)
        cursor = self.raw.cursor()
        # Always pass a params container, even empty: psycopg then reads %% as a literal %,
        # which is how placeholders() escapes it.
        cursor.execute(placeholders(statement), _params(params))
        return PgCursor(cursor)

    def executemany(self, statement: str, rows: Iterable[Any]) -> PgCursor:
        if self._begin:
            self._begin = False
            with self._with_begin():
                return self.executemany(statement, rows)
        cursor = self.raw.cursor()
        cursor.executemany(placeholders(statement), [_params(r) for r in rows])
        return PgCursor(cursor)

    def release(self) -> None:
        """Nothing to do: a psycopg cursor freed on another thread touches no shared state."""

    @contextlib.contextmanager
    def _with_begin(self) -> Iterator[None]:
        """A pipeline whose first statement is the deferred BEGIN."""
        if self.raw.pgconn.pipeline_status:  # already in a pipeline: queue it there
            self.raw.execute(b"BEGIN")
            yield
            return
        with self.raw.pipeline():
            self.raw.execute(b"BEGIN")
            yield

    def pipeline(self, *, final: bool = False) -> contextlib.AbstractContextManager[Any]:
        if final and self.lone and not self.raw.pgconn.pipeline_status:
            return self._committing()
        return self.raw.pipeline()

    @contextlib.contextmanager
    def _committing(self) -> Iterator[None]:
        """A pipeline that ends with the transaction's COMMIT: one round trip less, and row
        locks taken in the block are held for one round trip less."""
        with self.raw.pipeline():
            yield
            self.raw.execute(b"COMMIT")
        # Reached only when every statement and the COMMIT succeeded; otherwise the error
        # propagates and the group commit's ROLLBACK goes out as usual.
        self._committed = True

    def close(self) -> None:
        self.raw.close()


def _params(params: Any) -> Any:
    if isinstance(params, dict):
        return params
    return tuple(params)


def redact(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)


def connect(dsn: str, connect_timeout: float = 10.0) -> PgConnection:
    """A connection as every convhook connection is made (autocommit: transactions are
    begun explicitly, and a read-only statement outside one holds no snapshot)."""
    return PgConnection(psycopg.connect(dsn, autocommit=True, connect_timeout=int(connect_timeout)))


def group_commit(dsn: str) -> GroupCommit:
    """How batches of writes run on PostgreSQL."""
    return GroupCommit(redact(dsn), "BEGIN", psycopg.Error, _is_disconnect)


class PostgresDatabase(Database):
    """A PostgreSQL database. The schema is never changed on open: run
    ``convhook db upgrade`` (many processes must not race to migrate); a schema older or newer
    than this code is refused with that advice. ``writer``: see
    :class:`~convhook.store.engine.database.Database`."""

    dialect = POSTGRES

    def __init__(
        self,
        dsn: str,
        migrations: list[Migration] | None = None,
        *,
        max_batch: int = 512,
        readers: int = 4,
        auto_upgrade: bool = False,
        connect_timeout: float = 10.0,
        writer: WriterKind = "thread",
    ) -> None:
        super().__init__(max_batch=max_batch, readers=readers, writer=writer)
        self.dsn = dsn
        self._migrations = migrations or []
        self._auto_upgrade = auto_upgrade
        self._connect_timeout = connect_timeout
        self._listeners: list[tuple[threading.Thread, threading.Event]] = []

    @property
    def name(self) -> str:
        return redact(self.dsn)

    def connect(self) -> PgConnection:
        return connect(self.dsn, self._connect_timeout)

    def _migrate(self, conn: PgConnection) -> None:  # type: ignore[override]
        if self._auto_upgrade:
            apply_postgres(conn, self._migrations)
        else:
            check_postgres(conn, self._migrations, self.name)

    def group_commit(self) -> GroupCommit:
        return group_commit(self.dsn)

    def child_target(self) -> tuple[str, str, str]:
        # The DSN travels over the child's socket, not its command line: it may hold a password.
        return ("postgres", self.dsn, str(self._connect_timeout))

    def watch(
        self, channel: str, callback: Callable[[], None], *, table: str | None = None
    ) -> Unwatch:
        """Call ``callback`` (from a thread) whenever ``NOTIFY channel`` arrives; reconnects
        with backoff after a lost connection, and calls back once after each reconnect so
        nothing notified while disconnected is missed."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self._listen,
            args=(channel, callback, stop),
            name=f"pg-listen:{channel}",
            daemon=True,
        )
        self._listeners.append((thread, stop))
        thread.start()
        return stop.set

    def _listen(self, channel: str, callback: Callable[[], None], stop: threading.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
                    delay = 0.1
                    callback()
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            callback()
            except psycopg.Error as exc:
                log.warning(
                    "listening on %s failed: %s; reconnecting in %.1f s",
                    channel,
                    exc,
                    delay,
                    extra={"action": "listen_reconnect"},
                )
                stop.wait(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        listeners, self._listeners = self._listeners, []
        for _, stop in listeners:
            stop.set()
        await super().close()
        for thread, _ in listeners:
            # A listener notices its stop within one wait for notifications (0.5 s).
            await asyncio.to_thread(thread.join, 2)


def _is_disconnect(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _versions(conn: PgConnection) -> dict[str, int]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS convhook_schema "
        "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    rows = conn.execute("SELECT component, version FROM convhook_schema").fetchall()
    return {r[0]: r[1] for r in rows}


def check_postgres(conn: PgConnection, migrations: list[Migration], where: str) -> None:
    """Refuse a schema that is not exactly the version this code ships."""
    current = _versions(conn)
    for component, known in latest(migrations).items():
        found = current.get(component, 0)
        if found > known:
            raise SchemaVersionError(
                f"the {component} schema of {where} is at version {found}, newer than this "
                f"convhook knows ({known}): upgrade convhook on this machine"
            )
        if found < known:
            raise SchemaVersionError(
                f"the {component} schema of {where} is at version {found}, this convhook needs "
                f"{known}: run `convhook db upgrade --db <url>` first"
            )


def apply_postgres(conn: PgConnection, migrations: list[Migration]) -> list[Migration]:
    """Apply pending migrations under an advisory lock, one transaction each; return them."""
    applied: list[Migration] = []
    # A session-level lock serialises concurrent upgraders across machines.
    conn.execute("SELECT pg_advisory_lock(4242001)")
    try:
        current = _versions(conn)
        for component, known in latest(migrations).items():
            if current.get(component, 0) > known:
                check_postgres(conn, migrations, "this database")
        for m in migrations:
            if m.version <= current.get(m.component, 0):
                continue
            conn.raw.execute(b"BEGIN")  # now, not with the next statement: raw runs next
            try:
                conn.raw.execute(m.sql.encode())
                record_version(conn, m)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                raise
            applied.append(m)
            log.info(
                "applied migration %s %04d_%s",
                m.component,
                m.version,
                m.name,
                extra={"action": "migration_applied"},
            )
    finally:
        conn.execute("SELECT pg_advisory_unlock(4242001)")
    return applied
