"""The writer process on PostgreSQL: claims and records in a child with its own GIL, a lost
connection failing one batch only, and a DSN that never reaches a command line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from convhook.dispatcher import Dispatcher
from convhook.errors import StoreError
from convhook.signing import Secret, Verifier
from convhook.store import open_database
from convhook.store.delivery import claims_postgres, endpoints, log
from convhook.store.engine.database import Database
from convhook.store.engine.postgres import redact
from convhook.store.engine.writer_process import WriterProcess
from tests.support.delivery import LIFECYCLE, Receiver, add_endpoint, add_workspace, record_event
from tests.support.servers import free_port, serve_app


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    """A migrated producer database, its writes on a thread (the API's side)."""
    async with open_database(pg_url, "producer", auto_upgrade=True) as database:
        yield database


def _ms() -> int:
    return int(time.time() * 1000)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _proc(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def _with_password(url: str, password: str) -> str:
    """``url`` with a password (the test server trusts local connections and ignores it)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


async def test_dispatcher_with_a_postgres_writer_process_delivers_in_order(
    db: Database, pg_url: str
) -> None:
    """With its writes in a child process, the dispatcher delivers a lifecycle signed and in
    order and records every attempt; the child ends with the database."""
    secret = str(Secret.generate())
    receiver = Receiver()
    async with serve_app(receiver) as base:
        ws = await db.write(add_workspace)
        await db.write(lambda c: add_endpoint(c, ws, base + "/hook", secret, _ms()))
        sent = [
            await db.write(lambda c, s=seq, t=kind: record_event(c, ws, "conv_1", s, t, _ms()))
            for seq, kind in enumerate(LIFECYCLE, 1)
        ]
        async with open_database(pg_url, "producer", writer="process") as writing:
            child = writing.writer_pid
            assert child is not None
            async with Dispatcher(writing, allow_private=True) as dispatcher:
                dispatcher.wake()
                got = await receiver.wait_for(4)
                async with asyncio.timeout(10):
                    while dispatcher.delivered < 4:  # noqa: ASYNC110 - recorded by a flush
                        await asyncio.sleep(0.01)
            assert _alive(child)
    assert not _alive(child), "the writer process outlived its database"
    assert [r.event["eventType"] for r in got] == list(LIFECYCLE)
    assert [r.body for r in got] == [body for _, body in sent]
    for request in got:
        Verifier(secret).verify(request.headers, request.body)
    for event_id, _ in sent:
        [delivery] = await db.read(lambda c, e=event_id: log.of_event(c, ws, e))
        assert (delivery.status, delivery.attempts) == ("delivered", 1)


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
