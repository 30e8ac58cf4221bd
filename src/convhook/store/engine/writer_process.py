"""A database's writer in a child process: group commit without sharing the GIL.

A writer thread beside a busy event loop spends its batches waiting for the GIL, and makes
the loop wait in turn: Python's sqlite3 module lets go of the GIL around every statement step
and must take it back after each one, and psycopg builds and reads every statement's messages
in Python. With the dispatcher's writes on a thread, about a third of the process's CPU went
to that contention on SQLite. A child process has a GIL of its own. A
:class:`~convhook.store.engine.database.Database` runs its writer here with
``writer="process"``.

The parent sends each write as an operation (:mod:`.operations`: its name and its arguments,
decoded on the other side as its type hints say) over a socket pair. The child
(:mod:`.writer_child`) takes every request that is waiting and runs them as one group commit
(:mod:`.groupcommit`, as the writer thread does), and only then answers them all: a reply
means "committed".

The child runs in a session of its own and ignores SIGINT and SIGTERM: the parent stops it
by closing the socket after its own last write, and the child also exits when the parent dies
(the socket then reads end of file). A child that dies fails the requests in flight with
:class:`~convhook.errors.StoreError` and is started again on the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any, cast

import msgspec

from convhook.errors import ClosedError, StoreError
from convhook.store.engine.database import settle
from convhook.store.engine.groupcommit import Resolve
from convhook.store.engine.operations import LENGTH, MESSAGE, REPLY, Operation, operation

# Seconds close() waits for the answers still due (a batch may wait up to the 30 s busy
# timeout for another process's lock), then for the child to exit, before killing it. A batch
# cut off this way is unanswered: it may or may not have committed, as with any write whose
# connection is lost; the callers' writes are idempotent or retried.
_DRAIN_WAIT = 40.0
_STOP_WAIT = 10.0
_CHILD = "convhook.store.engine.writer_child"


class WriterProcess:
    """The writer of a database, in a child process. ``target`` is how the child opens it
    (:meth:`~convhook.store.engine.database.Database.child_target`), ``name`` the database in
    messages (never a password)."""

    def __init__(self, target: tuple[str, str, str], *, name: str) -> None:
        self.target = target
        self.name = name
        self._proc: asyncio.subprocess.Process | None = None
        self._protocol: _Replies | None = None
        self._seq = 0
        self._open = False
        self._encode = msgspec.msgpack.Encoder().encode
        self._spawning: asyncio.Future[None] | None = None
        self._posting: set[asyncio.Future[Any]] = set()

    def activity(self) -> tuple[int, bool]:
        """Requests sent plus replies read, and whether a reply is due (see
        :class:`~convhook.store.engine.database.Writer`)."""
        protocol = self._protocol
        if protocol is None:
            return self._seq, bool(self._posting)
        return self._seq + protocol.answered, bool(protocol._waiting or self._posting)

    @property
    def pid(self) -> int | None:
        """The child's process id, while one runs."""
        if self._proc is None or self._proc.returncode is not None:
            return None
        return self._proc.pid

    async def start(self) -> None:
        """Start the child (a no-op if it runs)."""
        self._open = True
        await self._ensure_child()

    async def _ensure_child(self) -> None:
        if self._protocol is not None and not self._protocol.lost:
            return
        # Callers that find the child gone at the same moment share one restart.
        if self._spawning is None:
            self._spawning = asyncio.ensure_future(self._spawn())
            self._spawning.add_done_callback(self._spawned)
        await asyncio.shield(self._spawning)

    def _spawned(self, done: asyncio.Future[None]) -> None:
        self._spawning = None
        if not done.cancelled():
            done.exception()  # retrieved: each waiter got it already

    async def _spawn(self) -> None:
        old, self._proc = self._proc, None
        if old is not None:
            # A child whose socket closed is gone or going: make sure, and reap it.
            with contextlib.suppress(ProcessLookupError):
                old.kill()
            await old.wait()
        parent, child = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                # -P: the working directory is not put on sys.path, so nothing there can
                # shadow a module the child imports.
                "-P",
                "-m",
                _CHILD,
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                # Out of the parent's process group, so a Ctrl-C or a SIGTERM sent to the
                # group reaches the parent alone, which then makes its last writes here.
                start_new_session=True,
            )
        except OSError as exc:
            parent.close()
            raise StoreError(f"cannot start the writer process of {self.name}: {exc}") from exc
        finally:
            child.close()
        protocol = _Replies(self.name)
        await asyncio.get_running_loop().create_connection(lambda: protocol, sock=parent)
        # The first frame names the database; the child answers it once its connection is
        # open, so a database it cannot open fails here, not on the first write.
        ready = protocol.expect(0)
        frame = self._encode((0, *self.target))
        protocol.write(LENGTH.pack(len(frame)) + frame)
        try:
            await ready
        except BaseException:
            protocol.close()
            raise
        self._protocol = protocol

    async def call(self, op: Callable[..., Any], *args: Any) -> Any:
        """Run ``op(conn, *args)`` in the child's next transaction; return once committed."""
        if not self._open:
            raise ClosedError(
                f"the writer process of {self.name} is not started: call start() first"
            )
        await self._ensure_child()
        if self._protocol is None or not self._open:
            raise ClosedError(
                f"the writer process of {self.name} was closed while this write waited"
            )
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._send(self._protocol, op, args, functools.partial(settle, future))
        return await future

    # Arguments travel when the request is written: the batchers send early instead, so the
    # child starts committing while the loop reads the rest.
    takes_late = False

    def post(
        self,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        resolve: Resolve,
        take: Callable[[], tuple[Any, ...]] | None = None,
    ) -> None:
        """:meth:`call` without a coroutine: the request is written at once and ``resolve``
        runs as soon as its reply is read.

        Hot paths use this: each task between a request and its reply costs a turn of the
        event loop, and a turn of a busy loop is a millisecond or more of waiting.
        """
        if take is not None:
            args = take()
        protocol = self._protocol
        if protocol is None or protocol.lost or not self._open or self._spawning is not None:
            # The child is (re)starting or gone: the slow path waits for it, or says why not.
            task = asyncio.ensure_future(self.call(op, *args))
            self._posting.add(task)  # the loop keeps only weak references to tasks

            def done(task: asyncio.Future[Any]) -> None:
                self._posting.discard(task)
                if task.cancelled():
                    resolve(False, asyncio.CancelledError())
                elif (error := task.exception()) is not None:
                    resolve(False, error)
                else:
                    resolve(True, task.result())

            task.add_done_callback(done)
            return
        self._send(protocol, op, args, resolve)

    def _send(
        self, protocol: _Replies, op: Callable[..., Any], args: tuple[Any, ...], resolve: Resolve
    ) -> None:
        spec = operation(op)
        self._seq += 1
        frame = self._encode((self._seq, spec.name, args))
        protocol.send(self._seq, LENGTH.pack(len(frame)) + frame, spec, resolve)

    async def close(self) -> None:
        """Let the child finish what it was sent, then stop it."""
        self._open = False
        if self._spawning is not None:
            # A restart in progress finishes first, so its child is stopped below too.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._spawning)
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.drain(), _DRAIN_WAIT)
            protocol.close()
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), _STOP_WAIT)
            except TimeoutError:
                proc.kill()
                await proc.wait()


_READY = Operation("ready", msgspec.msgpack.Decoder(), msgspec.msgpack.Decoder())


class _Replies(asyncio.Protocol):
    """The parent's end: writes requests, resolves each one from its reply."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lost = False
        self.answered = 0
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiting: dict[int, tuple[Operation, Resolve]] = {}
        self._idle: asyncio.Event | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def expect(self, seq: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.lost:
            future.set_exception(StoreError(f"the writer process of {self.name} exited at start"))
        else:
            self._waiting[seq] = (_READY, functools.partial(settle, future))
        return future

    def send(self, seq: int, frame: bytes, spec: Operation, resolve: Resolve) -> None:
        self._waiting[seq] = (spec, resolve)
        self.write(frame)

    def write(self, frame: bytes) -> None:
        assert self._transport is not None
        self._transport.write(frame)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        while len(buffer) - at >= 4:
            (size,) = LENGTH.unpack_from(buffer, at)
            if len(buffer) - at - 4 < size:
                break
            with memoryview(buffer) as view:
                seq, ok, raw = REPLY.decode(view[at + 4 : at + 4 + size])
                waiting = self._waiting.pop(seq, None)
                # Decoded now: a Raw holds the buffer, which cannot be resized while it does.
                try:
                    value = (
                        None
                        if waiting is None
                        else (waiting[0].result if ok else MESSAGE).decode(raw)
                    )
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    # Committed, but not as the operation's type hints say: its caller hears
                    # so, instead of waiting for an answer that was dropped here.
                    ok = False
                    value = f"the answer of {self.name}'s writer process could not be read: {exc}"
                del raw
            at += 4 + size
            self.answered += 1
            if waiting is None:
                continue
            if ok:
                waiting[1](True, value)
            else:
                waiting[1](False, StoreError(value))
        del buffer[:at]
        if not self._waiting and self._idle is not None:
            self._idle.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiting, self._waiting = self._waiting, {}
        for _, resolve in waiting.values():
            resolve(
                False,
                StoreError(
                    f"the writer process of {self.name} exited before answering; its last "
                    "batch may not have committed (it is started again on the next write)"
                ),
            )
        if self._idle is not None:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until every request sent has its reply (or the child is gone)."""
        if self._waiting and not self.lost:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
