"""The storage engines: group commit, savepoint isolation, migrations, reconnects."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from convhook.errors import ClosedError, ConfigError, SchemaVersionError, StoreError
from convhook.store import open_database
from convhook.store.engine.database import Database
from convhook.store.engine.groupcommit import Job
from convhook.store.engine.migrations import Migration
from convhook.store.engine.postgres import PostgresDatabase, apply_postgres, placeholders, redact
from convhook.store.engine.sqlite import SQLiteDatabase
from convhook.store.engine.url import DatabaseURL
from tests.support.postgres import TemporaryPostgres

SCHEMA = [
    Migration("test", 1, "init", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"),
    Migration("test", 2, "more", "ALTER TABLE items ADD COLUMN note TEXT"),
]


def engine(url: str, migrations: list[Migration] = SCHEMA) -> Database:
    target = DatabaseURL.parse(url)
    if target.engine == "postgres":
        return PostgresDatabase(target.target, migrations, auto_upgrade=True)
    return SQLiteDatabase(target.target, migrations)


def insert(name: str) -> Any:
    def fn(conn: Any) -> int:
        row = conn.execute(
            "INSERT INTO items (id, name) VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM items), ?) "
            "RETURNING id",
            (name,),
        ).fetchone()
        return int(row["id"])

    return fn


def count(conn: Any) -> int:
    return int(conn.execute("SELECT COUNT(*) AS n FROM items").fetchone()["n"])


async def test_concurrent_writes_share_commits(database_url: str) -> None:
    """Many concurrent writes all commit, in fewer transactions than writes."""
    async with engine(database_url) as db:
        ids = await asyncio.gather(*(db.write(insert(f"n{i}")) for i in range(300)))
        assert sorted(ids) == list(range(1, 301))
        assert await db.read(count) == 300
        assert db.batches < db.writes == 300


async def test_a_failing_write_is_rolled_back_alone(database_url: str) -> None:
    """A write that raises loses only its own changes; the rest of its batch commits."""
    async with engine(database_url) as db:
        await db.write(insert("taken"))

        def clash(conn: Any) -> None:
            conn.execute("INSERT INTO items (id, name) VALUES (100, 'fine-then-clash')")
            conn.execute("INSERT INTO items (id, name) VALUES (101, 'taken')")

        results = await asyncio.gather(
            db.write(insert("a")), db.write(clash), db.write(insert("b")), return_exceptions=True
        )
        assert isinstance(results[1], StoreError)
        assert isinstance(results[1].__cause__, sqlite3.Error | psycopg.Error)
        names = await db.read(
            lambda c: {r["name"] for r in c.execute("SELECT name FROM items").fetchall()}
        )
        assert names == {"taken", "a", "b"}


async def test_application_errors_pass_through_unwrapped(database_url: str) -> None:
    """An exception of the caller's own kind reaches the caller as itself."""
    async with engine(database_url) as db:

        def boom(conn: Any) -> None:
            conn.execute("INSERT INTO items (id, name) VALUES (7, 'x')")
            raise KeyError("mine")

        with pytest.raises(KeyError, match="mine"):
            await db.write(boom)
        assert await db.read(count) == 0


async def test_use_outside_the_lifecycle_says_what_is_missing(tmp_path: Path) -> None:
    """Writing to a database that was never opened raises ClosedError naming the fix."""
    db = SQLiteDatabase(tmp_path / "x.db", SCHEMA)
    with pytest.raises(ClosedError, match="async with"):
        await db.write(count)
    with pytest.raises(ClosedError):
        await db.read(count)


async def test_newer_schema_is_refused(database_url: str) -> None:
    """Code that knows version 1 refuses a database already at version 2."""
    async with engine(database_url):
        pass
    with pytest.raises(SchemaVersionError, match="newer than this convhook"):
        async with engine(database_url, SCHEMA[:1]):
            pass


async def test_postgres_schema_is_checked_not_applied_on_open(pg_url: str) -> None:
    """A plain PostgreSQL open refuses an old schema and names `convhook db upgrade`."""
    with pytest.raises(SchemaVersionError, match="convhook db upgrade"):
        async with PostgresDatabase(pg_url, SCHEMA):
            pass
    async with PostgresDatabase(pg_url, SCHEMA, auto_upgrade=True):
        pass
    async with PostgresDatabase(pg_url, SCHEMA) as db:
        assert await db.read(count) == 0


def test_concurrent_upgraders_apply_each_migration_once(pg_url: str) -> None:
    """Several processes upgrading at once serialise on an advisory lock."""
    applied: list[int] = []
    errors: list[BaseException] = []

    def upgrade() -> None:
        from convhook.store.engine.postgres import PgConnection

        try:
            with psycopg.connect(pg_url, autocommit=True) as raw:
                applied.append(len(apply_postgres(PgConnection(raw), SCHEMA)))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(applied) == [0, 0, 0, 2]


async def test_postgres_survives_a_server_restart(tmp_path: Path) -> None:
    """After the server restarts, the batch in flight fails and the next one reconnects."""
    with TemporaryPostgres() as server:
        async with PostgresDatabase(server.dsn, SCHEMA, auto_upgrade=True) as db:
            await db.write(insert("before"))
            server.restart()
            outcomes = []
            for i in range(20):
                try:
                    await db.write(insert(f"after{i}"))
                    outcomes.append(True)
                    break
                except StoreError:
                    outcomes.append(False)
                    await asyncio.sleep(0.1)
            assert outcomes[-1] is True
            for _ in range(20):
                try:
                    assert await db.read(count) == 2
                    break
                except StoreError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("reads never recovered after the restart")


async def test_listen_wakes_on_notify(pg_url: str) -> None:
    """NOTIFY on a channel calls the listener back (and once on connecting)."""
    async with PostgresDatabase(pg_url, SCHEMA, auto_upgrade=True) as db:
        woke = threading.Event()
        calls: list[int] = []

        def callback() -> None:
            calls.append(1)
            if len(calls) >= 2:
                woke.set()

        assert db.watch("convhook_test", callback)
        await asyncio.sleep(0.3)
        await db.write(lambda c: c.execute("SELECT pg_notify('convhook_test', '')"))
        assert await asyncio.to_thread(woke.wait, 5)


def test_open_database_picks_the_engine(tmp_path: Path) -> None:
    """A path opens SQLite, a postgresql:// URL opens PostgreSQL, other schemes are refused."""
    assert isinstance(open_database(str(tmp_path / "a.db"), "inbox"), SQLiteDatabase)
    with pytest.raises(ConfigError, match="unsupported database scheme"):
        DatabaseURL.parse("mysql://x")
    with pytest.raises(ConfigError, match="no database given"):
        DatabaseURL.parse("")


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = %s AND b = %s"),
        ("UPDATE t SET a = :a WHERE b = :b", "UPDATE t SET a = %(a)s WHERE b = %(b)s"),
        (
            "SELECT x::text, '?:no' FROM t WHERE a LIKE '5%'",
            "SELECT x::text, '?:no' FROM t WHERE a LIKE '5%%'",
        ),
        (
            # Only placeholders change: SQL that differs is written per dialect.
            "SELECT value FROM json_each(?)",
            "SELECT value FROM json_each(%s)",
        ),
    ],
)
def test_placeholders_become_psycopg_spellings(sqlite: str, postgres: str) -> None:
    """``?`` and ``:name`` placeholders become psycopg's; nothing else is rewritten."""
    assert placeholders(sqlite) == postgres.encode()


def test_redact_hides_passwords() -> None:
    """DSNs in messages never show the password."""
    assert redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"


async def test_constraint_violations_raise_one_class_on_both_engines(database_url: str) -> None:
    """Store code catches its engine's constraint error (``conn.dialect.integrity_error``)
    and turns it into its own error; the write's other changes are rolled back with it."""

    class Taken(Exception):
        pass

    async with engine(database_url) as db:
        await db.write(insert("dup"))

        def again(conn: Any) -> None:
            conn.execute("INSERT INTO items (id, name) VALUES (49, 'other')")
            try:
                conn.execute("INSERT INTO items (id, name) VALUES (50, 'dup')")
            except conn.dialect.integrity_error:
                # PostgreSQL aborts the transaction at the failed statement: end the write.
                raise Taken from None

        with pytest.raises(Taken):
            await db.write(again)
        assert await db.read(count) == 1


def _doubled(conn: Any, items: list[int]) -> list[int]:
    _calls.append(len(items))
    if -1 in items:
        raise ValueError("refused")
    conn.execute("SELECT 1")
    return [2 * n for n in items]


_calls: list[int] = []


async def test_batched_writes_waiting_together_run_as_one(database_url: str) -> None:
    """On a writer thread, the items submitted while a batched write waits to start all join
    it (one write, one savepoint, not one per item or per loop turn), and each caller still
    gets its own item's result."""
    from convhook.store.engine.batcher import Batcher

    _calls.clear()
    async with engine(database_url) as db:
        await db.write(insert("occupy"))  # the writer thread is running
        batcher: Batcher[int, int] = Batcher(db, _doubled, eager=1)
        results = await asyncio.gather(*(batcher.submit(n) for n in range(200)))
        assert results == [2 * n for n in range(200)]
        assert sum(_calls) == 200
        assert len(_calls) < 200


async def test_a_failing_joined_batch_fails_each_part(database_url: str) -> None:
    """When the joined write raises, every caller whose items it held gets the error; the
    next batch is unaffected."""
    from convhook.store.engine.batcher import Batcher

    async with engine(database_url) as db:
        batcher: Batcher[int, int] = Batcher(db, _doubled, eager=1)
        outcomes = await asyncio.gather(
            *(batcher.submit(n) for n in (1, -1, 3)), return_exceptions=True
        )
        assert all(isinstance(o, ValueError) for o in outcomes)
        assert await batcher.submit(4) == 8


async def test_a_watch_stops_when_asked(db_path: Path) -> None:
    """A SQLite watch calls back when another connection commits, and no more once the
    function it returned was called."""
    async with engine(str(db_path)) as db:
        calls: list[int] = []
        unwatch = db.watch("any", lambda: calls.append(1))
        assert unwatch is not None
        await asyncio.sleep(0.1)
        other = sqlite3.connect(db_path)
        other.execute("INSERT INTO items (id, name) VALUES (1, 'a')")
        other.commit()
        async with asyncio.timeout(5):
            while not calls:  # noqa: ASYNC110 - the watch polls
                await asyncio.sleep(0.02)
        unwatch()
        await asyncio.sleep(0.05)
        seen = len(calls)
        other.execute("INSERT INTO items (id, name) VALUES (2, 'b')")
        other.commit()
        other.close()
        await asyncio.sleep(0.2)
        assert len(calls) == seen


def _final_insert(*names: str) -> Any:
    def op(conn: Any) -> None:
        with conn.pipeline(final=True):
            for name in names:
                conn.execute(
                    "INSERT INTO items (id, name) VALUES "
                    "((SELECT COALESCE(MAX(id), 0) + 1 FROM items), ?)",
                    (name,),
                )

    return op


async def test_a_final_pipeline_commits_only_what_succeeded(database_url: str) -> None:
    """A write alone in its transaction whose final pipeline fails stores nothing and the
    connection goes on; one that succeeds is committed (its COMMIT rode with it on
    PostgreSQL); in a batch of several writes, a final pipeline commits nothing early: the
    one that fails is rolled back alone."""
    async with engine(database_url) as db:
        conn = db.connect()
        try:
            rules = db.group_commit()
            bad = Job(_final_insert("a", "a"), (), lambda ok, value: None)
            assert rules.run(conn, [bad])
            assert not bad.outcome[0]
            assert await db.read(count) == 0
            good = Job(_final_insert("b", "c"), (), lambda ok, value: None)
            assert rules.run(conn, [good])
            assert good.outcome[0], good.outcome
            assert await db.read(count) == 2
            pair = [
                Job(_final_insert("d"), (), lambda ok, value: None),
                Job(_final_insert("b"), (), lambda ok, value: None),
            ]
            assert rules.run(conn, pair)
            assert [job.outcome[0] for job in pair] == [True, False]
            assert await db.read(count) == 3
        finally:
            conn.close()


_BUMP = "UPDATE items SET note = ? WHERE id = ?"


def _failing_bump(conn: Any) -> None:
    """A write that raises after an ``executemany``: its exception's traceback holds the
    write's cursor, in a reference cycle that only the garbage collector frees."""
    cursor = conn.executemany(_BUMP, [("x", 1)])
    raise ValueError(cursor)


def _long_bump(started: threading.Event) -> Any:
    """A write updating the rows 20,000 times in one ``executemany`` (the failing writes'
    statement), saying when it has begun."""

    def fn(conn: Any) -> int:
        def rows() -> Iterator[tuple[str, int]]:
            for i in range(20_000):
                if i == 1:
                    started.set()
                yield (f"n{i}", i % 8 + 1)

        return int(conn.executemany(_BUMP, rows()).rowcount)

    return fn


def _collect_once_begun(started: threading.Event, garbage: list[Any]) -> None:
    started.wait(10)
    garbage.clear()
    gc.collect()


async def test_cursors_freed_on_another_thread_leave_the_writer_alone(
    database_url: str,
) -> None:
    """Failed writes' cursors, collected on another thread while the writer runs the same
    statement for another write, do not break that write (they reset SQLite's cached
    statement half-way through its `executemany`: "bad parameter or other API misuse")."""
    async with engine(database_url) as db:
        await asyncio.gather(*(db.write(insert(f"n{i}")) for i in range(8)))
        for _ in range(5):
            failed = await asyncio.gather(
                *(db.write(_failing_bump) for _ in range(300)), return_exceptions=True
            )
            assert all(isinstance(e, ValueError) for e in failed)
            started = threading.Event()
            updated, _ = await asyncio.gather(
                db.write(_long_bump(started)),
                asyncio.to_thread(_collect_once_begun, started, failed),
            )
            assert updated == 20_000
