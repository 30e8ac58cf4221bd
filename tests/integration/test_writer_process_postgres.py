"""The writer process on PostgreSQL: a lost connection failing one batch only, and a DSN
that never reaches a command line (delivery through it: test_writer_process.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from convhook.errors import StoreError
from convhook.store import open_database
from convhook.store.delivery import claims_postgres, endpoints
from convhook.store.engine.database import Database
from convhook.store.engine.postgres import redact
from convhook.store.engine.writer_process import WriterProcess
from tests.support.delivery import add_workspace
from tests.support.servers import free_port


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    """A migrated producer database, its writes on a thread (the API's side)."""
    async with open_database(pg_url, "producer", auto_upgrade=True) as database:
        yield database


def _ms() -> int:
    return int(time.time() * 1000)


def _proc(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def _with_password(url: str, password: str) -> str:
    """``url`` with a password (the test server trusts local connections and ignores it)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


async def test_a_lost_connection_fails_one_batch_and_the_next_reconnects(
    db: Database, pg_url: str
) -> None:
    """The child's connection cut by the server (a restart, an operator's kill): the write in
    flight fails with a retryable StoreError, the child stays up, and the next write opens a
    new connection and commits."""
    ws = await db.write(add_workspace)
    async with open_database(pg_url, "producer", writer="process") as writing:
        child = writing.writer_pid
        assert await writing.write(claims_postgres.claim_postgres, "w", _ms(), 1000, 10) == []
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert killed is not None
        assert killed[0] >= 1
        with pytest.raises(StoreError, match="retry"):
            await writing.write(claims_postgres.claim_postgres, "w", _ms(), 1000, 10)
        await writing.write(
            endpoints.create, "ep_after", ws, "http://h/", "whsec_x", 0, "", None, True, None, 10
        )
        assert writing.writer_pid == child
    assert [e.id for e in await db.read(endpoints.list_, ws)] == ["ep_after"]


async def test_a_database_the_child_cannot_open_fails_start_without_its_password() -> None:
    """A child that cannot connect answers the opening frame with the reason: start() raises
    StoreError at once, naming the database without its password."""
    dsn = f"postgresql://convhook:hunter2-secret@127.0.0.1:{free_port()}/nowhere"
    writer = WriterProcess(("postgres", dsn, "2"), name=redact(dsn))
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        await writer.start()
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "cannot open the database" in message
    assert "hunter2" not in message
    await writer.close()


async def test_the_dsn_travels_over_the_socket_not_the_command_line(
    db: Database, pg_url: str
) -> None:
    """A password in the DSN is not visible in the child's command line or environment (any
    local user can read a command line)."""
    url = _with_password(pg_url, "hunter2-secret")
    assert "hunter2-secret@" in url
    async with open_database(url, "producer", writer="process") as writing:
        child = writing.writer_pid
        assert child is not None
        assert await writing.write(claims_postgres.claim_postgres, "w", _ms(), 1000, 10) == []
        cmdline, environ = _proc(child, "cmdline"), _proc(child, "environ")
        assert b"convhook.store.engine.writer_child" in cmdline
        assert b"hunter2" not in cmdline
        assert b"hunter2" not in environ
        assert "hunter2" not in writing.name
