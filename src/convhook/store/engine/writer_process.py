"""A SQLite writer in a child process: group commit without sharing the GIL.

Python's sqlite3 module lets go of the GIL around every statement step and must take it back
after each one. A writer thread beside a busy event loop therefore spends its batches waiting
for the GIL, and makes the loop wait in turn; with the dispatcher's writes on a thread, about
a third of the process's CPU went to that contention. A child process has a GIL of its own.
:class:`~convhook.store.engine.sqlite.SQLiteDatabase` runs its writer here with
``writer="process"``.

The parent sends each write as an operation's name (``module:function``, a module-level
function under ``convhook.store``) and its arguments, over a socket pair, as msgpack frames;
arguments and results are encoded by msgspec and decoded as the operation's type hints say,
so structs, tuples and enums arrive as they left. The child takes every request that is
waiting and runs them as one group commit (:mod:`.groupcommit`, as the writer thread does),
and only then answers them all: a reply means "committed".

The child runs in a session of its own and ignores SIGINT and SIGTERM: the parent stops it
by closing the socket after its own last write, and the child also exits when the parent dies
(the socket then reads end of file). A child that dies fails the requests in flight with
:class:`~convhook.errors.StoreError` and is started again on the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec

from convhook.errors import ClosedError, StoreError
from convhook.store.engine.database import settle
from convhook.store.engine.groupcommit import GroupCommit, Job, Resolve

_LENGTH = struct.Struct("<I")
# Seconds close() waits for the answers still due (a batch may wait up to the 30 s busy
# timeout for another process's lock), then for the child to exit, before killing it. A batch
# cut off this way is unanswered: it may or may not have committed, as with any write whose
# connection is lost; the callers' writes are idempotent or retried.
_DRAIN_WAIT = 40.0
_STOP_WAIT = 10.0
# Only the store's own operations run in the child.
_OPS_PACKAGE = "convhook.store."
_FRAME = msgspec.msgpack.Decoder(tuple[int, str, msgspec.Raw])
_REPLY = msgspec.msgpack.Decoder(tuple[int, bool, msgspec.Raw])
_ERROR = msgspec.msgpack.Decoder(str)


@dataclass(frozen=True)
class Operation:
    """How one operation crosses to the child: its name and its typed decoders."""

    name: str
    args: msgspec.msgpack.Decoder[Any]
    result: msgspec.msgpack.Decoder[Any]


@functools.cache
def operation(op: Callable[..., Any]) -> Operation:
    """The wire form of ``op``, read from its signature and type hints (once per op)."""
    module, qualname = getattr(op, "__module__", ""), getattr(op, "__qualname__", "")
    if not module.startswith(_OPS_PACKAGE) or "<" in qualname or "." in qualname:
        raise TypeError(
            f"{module}.{qualname} cannot run in the SQLite writer process: a write there must "
            f"be a module-level function under {_OPS_PACKAGE.rstrip('.')}"
        )
    hints = typing.get_type_hints(op)
    params = list(inspect.signature(op).parameters.values())[1:]
    types = tuple(hints.get(p.name, Any) for p in params)
    args: Any = tuple[types] if types else tuple[()]  # type: ignore[valid-type]
    return Operation(
        f"{module}:{qualname}",
        msgspec.msgpack.Decoder(args),
        msgspec.msgpack.Decoder(hints.get("return", Any)),
    )


def _resolve_name(name: str) -> Callable[..., Any]:
    module, _, qualname = name.partition(":")
    if not module.startswith(_OPS_PACKAGE):
        raise LookupError(f"unknown writer operation {name!r}")
    fn = getattr(importlib.import_module(module), qualname, None)
    if not callable(fn):
        raise LookupError(f"unknown writer operation {name!r}")
    return cast(Callable[..., Any], fn)


class WriterProcess:
    """The writer of the SQLite file at ``path``, in a child process."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._proc: asyncio.subprocess.Process | None = None
        self._protocol: _Replies | None = None
        self._seq = 0
        self._open = False
        self._encode = msgspec.msgpack.Encoder().encode
        self._spawning: asyncio.Future[None] | None = None
        self._posting: set[asyncio.Future[Any]] = set()

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
                __name__,
                str(self.path),
                self.synchronous,
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                # Out of the parent's process group, so a Ctrl-C or a SIGTERM sent to the
                # group reaches the parent alone, which then makes its last writes here.
                start_new_session=True,
            )
        except OSError as exc:
            parent.close()
            raise StoreError(f"cannot start the SQLite writer process: {exc}") from exc
        finally:
            child.close()
        protocol = _Replies()
        # The child answers request 0 once its connection is open: a file it cannot open
        # fails here, not on the first write. Expected before connecting, so the answer
        # cannot arrive before anyone waits for it.
        ready = protocol.expect(0)
        await asyncio.get_running_loop().create_connection(lambda: protocol, sock=parent)
        self._protocol = protocol
        await ready

    async def call(self, op: Callable[..., Any], *args: Any) -> Any:
        """Run ``op(conn, *args)`` in the child's next transaction; return once committed."""
        if not self._open:
            raise ClosedError("the SQLite writer process is not started: call start() first")
        await self._ensure_child()
        if self._protocol is None or not self._open:
            raise StoreError("the SQLite writer process was closed while this write waited")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._send(self._protocol, op, args, functools.partial(settle, future))
        return await future

    def post(self, op: Callable[..., Any], args: tuple[Any, ...], resolve: Resolve) -> None:
        """:meth:`call` without a coroutine: the request is written at once and ``resolve``
        runs as soon as its reply is read.

        Hot paths use this: each task between a request and its reply costs a turn of the
        event loop, and a turn of a busy loop is a millisecond or more of waiting.
        """
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
        protocol.send(self._seq, _LENGTH.pack(len(frame)) + frame, spec, resolve)

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

    def __init__(self) -> None:
        self.lost = False
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
            future.set_exception(StoreError("the SQLite writer process exited at start"))
        else:
            self._waiting[seq] = (_READY, functools.partial(settle, future))
        return future

    def send(self, seq: int, frame: bytes, spec: Operation, resolve: Resolve) -> None:
        assert self._transport is not None
        self._waiting[seq] = (spec, resolve)
        self._transport.write(frame)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        while len(buffer) - at >= 4:
            (size,) = _LENGTH.unpack_from(buffer, at)
            if len(buffer) - at - 4 < size:
                break
            with memoryview(buffer) as view:
                seq, ok, raw = _REPLY.decode(view[at + 4 : at + 4 + size])
                waiting = self._waiting.pop(seq, None)
                # Decoded now: a Raw holds the buffer, which cannot be resized while it does.
                value = (
                    None if waiting is None else (waiting[0].result if ok else _ERROR).decode(raw)
                )
                del raw
            at += 4 + size
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
                    "the SQLite writer process exited before answering; its last batch "
                    "may not have committed (it is started again on the next write)"
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


# -- the child -------------------------------------------------------------------------


def serve(commit: GroupCommit, conn: sqlite3.Connection, sock: socket.socket) -> None:
    """Answer the parent's requests until it closes the socket (or dies)."""
    encode = msgspec.msgpack.Encoder().encode
    buffer = bytearray()
    while True:
        try:
            data = sock.recv(1 << 20)
        except ConnectionResetError:  # the parent died with requests unread
            return
        if not data:
            return
        buffer += data
        # Whatever else has arrived meanwhile joins this batch.
        sock.setblocking(False)
        try:
            while more := sock.recv(1 << 20):
                buffer += more
        except BlockingIOError:
            pass
        finally:
            sock.setblocking(True)
        frames = []
        at = 0
        while len(buffer) - at >= 4:
            (size,) = _LENGTH.unpack_from(buffer, at)
            if len(buffer) - at - 4 < size:
                break
            frames.append(bytes(buffer[at + 4 : at + 4 + size]))
            at += 4 + size
        del buffer[:at]
        if frames:
            replies = [_encoded(encode, reply) for reply in run_batch(commit, conn, frames)]
            try:
                sock.sendall(b"".join(_LENGTH.pack(len(r)) + r for r in replies))
            except (BrokenPipeError, ConnectionResetError):  # the parent is gone
                return


def _encoded(encode: Callable[[Any], bytes], reply: tuple[int, bool, Any]) -> bytes:
    try:
        return encode(reply)
    except (TypeError, ValueError, OverflowError) as exc:
        # Committed, but the answer cannot travel: say so rather than let the child die.
        return encode((reply[0], False, f"the result could not be sent back: {exc}"))


def _refused(error: BaseException) -> Callable[..., Any]:
    def refuse(conn: object) -> None:
        raise error

    return refuse


def run_batch(
    commit: GroupCommit, conn: sqlite3.Connection, frames: list[bytes]
) -> list[tuple[int, bool, Any]]:
    """Run request frames as one group commit; a failing one rolls back alone."""
    jobs: list[tuple[int, Job]] = []
    for frame in frames:
        seq, name, raw = _FRAME.decode(frame)
        try:
            op = _resolve_name(name)
            args = operation(op).args.decode(raw)
        except (LookupError, TypeError, msgspec.DecodeError) as exc:
            op, args = _refused(exc), ()
        jobs.append((seq, Job(op, tuple(args), _ignore)))
    commit.run(conn, [job for _, job in jobs])  # type: ignore[arg-type]
    return [
        (seq, ok, value if ok else _message(value))
        for seq, (ok, value) in ((seq, job.outcome) for seq, job in jobs)
    ]


def _message(error: BaseException) -> str:
    if isinstance(error, StoreError):
        return str(error)
    return f"write failed: {error}"


def _ignore(ok: bool, value: Any) -> None:
    """The child answers from each job's outcome after the batch, not per job."""


def main(argv: list[str]) -> None:
    from convhook.store.engine.sqlite import connect

    path, synchronous, fd = argv
    # The parent decides when to stop (it closes the socket after its last write): a signal
    # sent to this process by mistake must not cut that write off either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(fd))
    conn = connect(path, synchronous=synchronous)
    commit = GroupCommit(path, "BEGIN IMMEDIATE", sqlite3.Error)
    try:
        ready = msgspec.msgpack.encode((0, True, None))
        sock.sendall(_LENGTH.pack(len(ready)) + ready)
        serve(commit, conn, sock)
    finally:
        conn.close()
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
