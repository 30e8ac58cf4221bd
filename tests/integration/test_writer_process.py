"""The writer process: the dispatcher's claims and records in a child with its own GIL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from convhook.config import DatabaseURL
from convhook.dispatcher import Dispatcher
from convhook.errors import ClosedError, StoreError
from convhook.retry import Verdict
from convhook.signing import Secret, Verifier
from convhook.store import open_database
from convhook.store.delivery import Claim, Result, claims, endpoints, log
from convhook.store.delivery.store import record_then_claim
from convhook.store.engine.database import Database
from convhook.store.engine.groupcommit import GroupCommit, Link
from convhook.store.engine.operations import LENGTH, operation
from convhook.store.engine.sqlite import SQLiteDatabase, connect
from convhook.store.engine.writer_child import run_batch
from convhook.store.engine.writer_process import WriterProcess, _Replies
from convhook.store.inbox import Received, SQLiteInbox
from tests.support.delivery import (
    LIFECYCLE,
    Receiver,
    add_endpoint,
    add_workspace,
    record_event,
)
from tests.support.servers import process_alive, serve_app


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    """A producer database on a SQLite file (its writes on a thread: the API's side)."""
    async with open_database(str(db_path), "producer", synchronous="NORMAL") as database:
        yield database


def _process_db(path: Path) -> Database:
    """The same file with its writer in a child process (the dispatcher's side)."""
    return open_database(str(path), "producer", synchronous="NORMAL", writer="process")


def _ms() -> int:
    return int(time.time() * 1000)


async def test_dispatcher_with_writer_process_delivers_in_order(database_url: str) -> None:
    """On a database whose writer is a child process (either engine), the dispatcher
    delivers a lifecycle signed and in order, and every attempt is recorded; the child ends
    with the database."""
    secret = str(Secret.generate())
    receiver = Receiver()
    async with (
        open_database(database_url, "producer", synchronous="NORMAL", auto_upgrade=True) as db,
        serve_app(receiver) as base,
    ):
        ws = await db.write(add_workspace)
        await db.write(lambda c: add_endpoint(c, ws, base + "/hook", secret, _ms()))
        sent = [
            await db.write(lambda c, s=seq, t=kind: record_event(c, ws, "conv_1", s, t, _ms()))
            for seq, kind in enumerate(LIFECYCLE, 1)
        ]
        async with open_database(
            database_url, "producer", synchronous="NORMAL", writer="process"
        ) as writing:
            async with Dispatcher(writing, allow_private=True) as dispatcher:
                dispatcher.wake()
                got = await receiver.wait_for(4)
            child = writing.writer_pid
            assert child is not None
            assert process_alive(child)
        assert not process_alive(child), "the writer process outlived its database"
        assert [r.event["eventType"] for r in got] == list(LIFECYCLE)
        assert [r.body for r in got] == [body for _, body in sent]
        for request in got:
            Verifier(secret).verify(request.headers, request.body)
        for event_id, _ in sent:
            [delivery] = await db.read(lambda c, e=event_id: log.of_event(c, ws, e))
            assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
                "delivered",
                1,
                200,
            )
            attempts = await db.read(lambda c, d=delivery.id: log.attempts_of(c, d))
            assert [a.status_code for a in attempts] == [200]


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_damaged_secret_fails_its_attempt_only(
    db: Database, db_path: Path, writer: str
) -> None:
    """An endpoint whose stored secret cannot be parsed gets a failed attempt that says so;
    the claim it was in, and other endpoints' deliveries, go on."""
    receiver = Receiver()
    async with serve_app(receiver) as base:
        ws = await db.write(add_workspace)
        good = str(Secret.generate())
        await db.write(lambda c: add_endpoint(c, ws, base + "/good", good, _ms()))
        bad = await db.write(lambda c: add_endpoint(c, ws, base + "/bad", good, _ms()))
        await db.write(
            lambda c: c.execute("UPDATE endpoints SET secret = 'whsec_!!' WHERE id = ?", (bad,))
        )
        await db.write(lambda c: record_event(c, ws, "conv_1", 1, LIFECYCLE[0], _ms()))
        async with _process_db(db_path) if writer == "process" else _borrowed(db) as writing:
            dispatcher = Dispatcher(writing, allow_private=True)
            await dispatcher.open()
            try:
                results = await dispatcher.run_once()
            finally:
                await dispatcher.close()
    by_endpoint = {r.endpoint_id: r for r in results}
    assert by_endpoint[bad].status_code is None
    assert "cannot sign the request" in (by_endpoint[bad].error or "")
    assert [r.path for r in receiver.received] == ["/good"]


class _borrowed:
    """An open database used as a context manager that leaves it open."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __aenter__(self) -> Database:
        return self.db

    async def __aexit__(self, *exc: object) -> None:
        pass


def test_the_dispatcher_command_chooses_the_writer(pg_url: str, tmp_path: Path) -> None:
    """``convhook dispatcher`` puts the writer in a child process unless told not to, on
    either engine."""
    from convhook.cli.dispatcher import _database
    from convhook.store.engine.postgres import PostgresDatabase

    sqlite_url = DatabaseURL.parse(str(tmp_path / "d.db"))
    chosen = _database(sqlite_url, synchronous="FULL", writer_process=True)
    assert isinstance(chosen, SQLiteDatabase)
    assert chosen.writer == "process"
    chosen = _database(sqlite_url, synchronous="FULL", writer_process=False)
    assert isinstance(chosen, SQLiteDatabase)
    assert chosen.writer == "thread"
    chosen = _database(DatabaseURL.parse(pg_url), synchronous="FULL", writer_process=True)
    assert isinstance(chosen, PostgresDatabase)
    assert chosen.writer == "process"
    chosen = _database(DatabaseURL.parse(pg_url), synchronous="FULL", writer_process=False)
    assert chosen.writer == "thread"


async def test_killed_child_fails_its_requests_and_is_restarted(db: Database) -> None:
    """A request in flight when the child dies fails with StoreError; the next request starts
    a new child and succeeds."""
    assert isinstance(db, SQLiteDatabase)
    writer = WriterProcess(db.child_target(), name=db.name)
    with pytest.raises(ClosedError, match="start"):
        await writer.call(claims.claim_sqlite, "w", _ms(), 1000, 10)
    await writer.start()
    try:
        assert await writer.call(claims.claim_sqlite, "w", _ms(), 1000, 10) == []
        first = writer.pid
        assert first is not None
        os.kill(first, signal.SIGSTOP)  # the request below stays in flight
        pending = asyncio.ensure_future(writer.call(claims.claim_sqlite, "w", _ms(), 1000, 10))
        await asyncio.sleep(0.1)
        assert not pending.done()
        os.kill(first, signal.SIGKILL)
        with pytest.raises(StoreError, match=r"writer process .*exited"):
            await pending
        assert await writer.call(claims.claim_sqlite, "w", _ms(), 1000, 10) == []
        assert writer.pid not in (None, first)
    finally:
        await writer.close()
    assert writer.pid is None


async def test_callers_finding_the_child_gone_share_one_restart(db: Database) -> None:
    """Several calls made at once after the child died start one new child, not one each."""
    assert isinstance(db, SQLiteDatabase)
    async with _writer(db) as writer:
        first = await _kill_child(writer)
        results = await asyncio.gather(
            *(writer.call(claims.claim_sqlite, "w", _ms(), 1000, 10) for _ in range(5))
        )
        assert results == [[]] * 5
        alive = [pid for pid in _writer_children() if process_alive(pid)]
        assert alive == [writer.pid]
        assert writer.pid != first


async def test_close_during_a_restart_stops_the_new_child(db: Database) -> None:
    """Closing while a call restarts the child fails that call with ClosedError and stops the
    new child at once instead of leaving it to a kill after the stop timeout."""
    assert isinstance(db, SQLiteDatabase)
    writer = WriterProcess(db.child_target(), name=db.name)
    await writer.start()
    await _kill_child(writer)
    call = asyncio.ensure_future(writer.call(claims.claim_sqlite, "w", _ms(), 1000, 10))
    await asyncio.sleep(0)  # the call starts the restart
    started = time.monotonic()
    await writer.close()
    assert time.monotonic() - started < 5
    with pytest.raises((ClosedError, StoreError)):
        await call
    assert not any(process_alive(pid) for pid in _writer_children())


async def _kill_child(writer: WriterProcess) -> int:
    """SIGKILL the writer's child and wait until the parent has seen it exit; its pid."""
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(10):
        while writer.pid is not None:  # noqa: ASYNC110 - no event marks the exit
            await asyncio.sleep(0.01)
    return pid


def _writer_children() -> list[int]:
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"convhook.store.engine.writer_child" in cmdline:
                found.append(int(pid))
    return found


async def test_child_ignores_sigterm_until_the_parent_closes(db: Database) -> None:
    """SIGTERM sent to the whole process group leaves the child serving, so the parent's
    last records still commit; closing the socket stops it."""
    assert isinstance(db, SQLiteDatabase)
    writer = WriterProcess(db.child_target(), name=db.name)
    await writer.start()
    child = writer.pid
    assert child is not None
    os.kill(child, signal.SIGTERM)
    os.kill(child, signal.SIGINT)
    assert await writer.call(claims.claim_sqlite, "w", _ms(), 1000, 10) == []
    assert writer.pid == child
    await writer.close()
    assert not process_alive(child)


def _not_a_store_op(conn: Any) -> None:
    """A module-level function outside convhook.store: the child must not run it."""


async def test_an_operation_outside_the_store_is_refused_in_the_parent(db: Database) -> None:
    """A lambda, a nested function or a function outside convhook.store is refused with
    TypeError before anything is sent; the writer goes on serving."""
    assert isinstance(db, SQLiteDatabase)
    async with _writer(db) as writer:
        for op in (lambda c: None, _not_a_store_op):
            with pytest.raises(TypeError, match=r"module-level function under convhook\.store"):
                await writer.call(op)
        assert await writer.call(claims.claim_sqlite, "w", _ms(), 1000, 10) == []


async def test_an_unknown_name_sent_to_the_child_answers_an_error(
    db: Database, db_path: Path
) -> None:
    """A request naming no store function, or one outside the store, is answered with an
    error alone; the other requests of its batch commit."""
    conn = connect(db_path)
    try:
        ok = msgspec.msgpack.encode((3, "convhook.store.delivery.claims:has_due", (0,)))
        frames = [
            msgspec.msgpack.encode((1, "convhook.store.delivery.claims:drop", ())),
            msgspec.msgpack.encode((2, "os:getcwd", ())),
            ok,
        ]
        replies = run_batch(Link(_commit(db_path), lambda: conn, conn), frames)
    finally:
        conn.close()
    assert [r[:2] for r in replies] == [(1, False), (2, False), (3, True)]
    assert "unknown writer operation 'convhook.store.delivery.claims:drop'" in replies[0][2]
    assert "unknown writer operation 'os:getcwd'" in replies[1][2]
    assert replies[2][2] is False


def _commit(path: Path) -> GroupCommit:
    import sqlite3

    return GroupCommit(str(path), "BEGIN IMMEDIATE", sqlite3.Error)


async def test_post_answers_through_its_callback(db: Database) -> None:
    """post() writes the request at once and calls back with the committed result; before
    start() and after the child died it still answers: ClosedError, or a restarted child."""
    assert isinstance(db, SQLiteDatabase)
    writer = WriterProcess(db.child_target(), name=db.name)

    async def post(op: Any, *args: Any) -> tuple[bool, Any]:
        answer: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        writer.post(op, args, lambda ok, value: answer.set_result((ok, value)))
        return await answer

    ok, error = await post(claims.claim_sqlite, "w", _ms(), 1000, 10)
    assert not ok
    assert isinstance(error, ClosedError)
    await writer.start()
    try:
        assert await post(claims.claim_sqlite, "w", _ms(), 1000, 10) == (True, [])
        ok, error = await post(endpoints.get, "ws_none", 7)  # an id of the wrong type
        assert not ok
        assert isinstance(error, StoreError)
        first = await _kill_child(writer)
        assert await post(claims.claim_sqlite, "w", _ms(), 1000, 10) == (True, [])
        assert writer.pid not in (None, first)
    finally:
        await writer.close()


async def test_batch_rolls_back_a_failing_request_alone(db: Database, db_path: Path) -> None:
    """In one transaction, a request that fails is rolled back to its savepoint and answered
    with its error; the others commit."""
    ws = await db.write(add_workspace)
    encode = msgspec.msgpack.encode
    create = f"{endpoints.__name__}:create"

    def new(seq: int, endpoint_id: str) -> bytes:
        args = (endpoint_id, ws, "http://h/", "whsec_x", 0, "", None, True, None, 10)
        return encode((seq, create, args))

    conn = connect(db_path)
    try:
        replies = run_batch(
            Link(_commit(db_path), lambda: conn, conn),
            [new(1, "ep_a"), new(2, "ep_a"), new(3, "ep_c")],
        )
    finally:
        conn.close()
    assert [r[:2] for r in replies] == [(1, True), (2, False), (3, True)]
    assert "UNIQUE" in replies[1][2]
    assert [e.id for e in await db.read(endpoints.list_, ws)] == ["ep_a", "ep_c"]


def test_claims_and_results_cross_the_wire_as_they_are() -> None:
    """A claim list and a record's arguments survive msgpack, decoded as the operations'
    type hints say: structs, tuples and the verdict enum come back equal."""
    claim = Claim(
        7,
        "evt_1",
        "conversation.completed",
        "ep_1",
        "conv_1",
        "http://h/",
        b"{}",
        ("whsec_a", "whsec_b"),
        2,
        5.0,
        "w1",
        3,
    )
    claimed = operation(claims.claim_sqlite).result.decode(msgspec.msgpack.encode([claim]))
    assert claimed == [claim]
    assert isinstance(claimed[0].secrets, tuple)
    result = Result(7, "ep_1", "w1", 1000, 503, 12.5, "HTTP 503", "busy", Verdict.RETRY, 6000)
    args = (([result], 2000, 0, "w1", 60_000, 5),)
    [decoded] = [operation(record_then_claim).args.decode(msgspec.msgpack.encode(a)) for a in args]
    assert decoded == ([result], 2000, 0, "w1", 60_000, 5)
    assert decoded[0][0].verdict is Verdict.RETRY
    assert "whsec" not in repr(claim)
    assert "{}" not in repr(claim)


async def test_a_reply_settles_its_callers_in_the_same_loop_turn() -> None:
    """The reply to a batch resolves each waiting request while it is read, with no task or
    callback turn in between: under load every turn of the loop is a millisecond or more."""
    from convhook.store.engine.batcher import Batcher
    from convhook.store.inbox import ops

    class Direct:
        """Stands in for the child's socket: the reply is fed to the parent's protocol."""

        def __init__(self) -> None:
            self.replies = _Replies("test.db")
            self.sent: list[tuple[Any, Any]] = []

        takes_late = False

        def post(self, op: Any, args: tuple[Any, ...], resolve: Any, take: Any = None) -> None:
            self.sent.append((op, args))
            self.replies._waiting[7] = (operation(op), resolve)

    direct = Direct()
    batcher: Batcher[str, bool] = Batcher(direct, ops.add)  # type: ignore[arg-type]
    futures = [batcher.submit(f"evt_{n}") for n in range(3)]
    futures[1].cancel()  # its request was cancelled: the others still get their answers
    await asyncio.sleep(0)  # the end of the turn sends the batch
    assert direct.sent == [(ops.add, (["evt_0", "evt_1", "evt_2"],))]
    frame = msgspec.msgpack.encode((7, True, [True, False, True]))
    direct.replies.data_received(LENGTH.pack(len(frame)) + frame)
    assert futures[0].result() is True
    assert futures[2].result() is True
    assert futures[1].cancelled()


def test_an_answer_that_cannot_be_read_fails_its_request_alone() -> None:
    """A reply whose result does not match the operation's type hints fails that request with
    StoreError; the requests answered in the same read still get their results."""
    replies = _Replies("test.db")
    got: dict[int, tuple[bool, Any]] = {}
    for seq in (1, 2):
        replies._waiting[seq] = (
            operation(claims.claim_sqlite),
            lambda ok, value, seq=seq: got.__setitem__(seq, (ok, value)),
        )
    frames = [
        msgspec.msgpack.encode((1, True, "not a list of claims")),
        msgspec.msgpack.encode((2, True, [])),
    ]
    replies.data_received(b"".join(LENGTH.pack(len(f)) + f for f in frames))
    ok, error = got[1]
    assert not ok
    assert isinstance(error, StoreError)
    assert "could not be read" in str(error)
    assert got[2] == (True, [])
    assert not replies._waiting


def _received(n: int) -> Received:
    return Received(f"evt_{n}", f"msg_{n}", "conversation.userJoined", b"{}", {}, 1.0)


async def test_a_cancelled_restart_cancels_the_waiting_adds(tmp_path: Path) -> None:
    """Adds posted while the child is gone wait on its restart; if that is cancelled (the
    loop shutting down), their futures are cancelled, not failed with CancelledError."""
    inbox = SQLiteInbox(tmp_path / "inbox.db", synchronous="NORMAL", writer="process")
    async with inbox:
        writer = inbox.db._writer
        assert isinstance(writer, WriterProcess)
        await _kill_child(writer)
        future = asyncio.ensure_future(inbox.add(_received(1)))
        await asyncio.sleep(0.01)  # the end of the turn posts the batch: the slow path
        assert len(writer._posting) == 1
        for task in writer._posting:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await future
        assert await inbox.add(_received(1)) is True


async def test_inbox_child_killed_mid_batch_loses_nothing_committed(tmp_path: Path) -> None:
    """An inbox add in flight when its writer child dies fails (the receiver answers 503, so
    the sender retries); what was committed before stays, and the next add restarts it."""
    inbox = SQLiteInbox(tmp_path / "inbox.db", synchronous="NORMAL", writer="process")
    async with inbox:
        assert isinstance(inbox.db, SQLiteDatabase)
        assert await inbox.add(_received(1)) is True
        child = inbox.db.writer_pid
        assert child is not None
        os.kill(child, signal.SIGSTOP)
        pending = asyncio.ensure_future(inbox.add(_received(2)))
        await asyncio.sleep(0.1)
        os.kill(child, signal.SIGKILL)
        with pytest.raises(StoreError, match=r"writer process .*exited"):
            await pending
        assert await inbox.get("evt_2") is None
        assert await inbox.add(_received(2)) is True
        assert await inbox.add(_received(1)) is False
        assert {e.event_id for e in await inbox.recent()} == {"evt_1", "evt_2"}
        assert inbox.db.writer_pid not in (None, child)


class _writer:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.writer = WriterProcess(db.child_target(), name=db.name)

    async def __aenter__(self) -> WriterProcess:
        await self.writer.start()
        return self.writer

    async def __aexit__(self, *exc: object) -> None:
        await self.writer.close()
