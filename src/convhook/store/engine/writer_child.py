"""The SQLite writer process itself: ``python -m convhook.store.engine.writer_child``.

It reads request frames (:mod:`.operations`) from the socket its parent
(:class:`~convhook.store.engine.writer_process.WriterProcess`) passed it, runs every request
that is waiting as one group commit (:mod:`.groupcommit`, as the writer thread does), and only
then answers them all. It ignores SIGINT and SIGTERM and exits when the parent closes the
socket or dies.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from convhook.errors import StoreError
from convhook.store.engine.groupcommit import GroupCommit, Job
from convhook.store.engine.operations import LENGTH, REQUEST, operation, resolve


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
            (size,) = LENGTH.unpack_from(buffer, at)
            if len(buffer) - at - 4 < size:
                break
            frames.append(bytes(buffer[at + 4 : at + 4 + size]))
            at += 4 + size
        del buffer[:at]
        if frames:
            replies = [_encoded(encode, reply) for reply in run_batch(commit, conn, frames)]
            try:
                sock.sendall(b"".join(LENGTH.pack(len(r)) + r for r in replies))
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
        seq, name, raw = REQUEST.decode(frame)
        try:
            op = resolve(name)
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
        sock.sendall(LENGTH.pack(len(ready)) + ready)
        serve(commit, conn, sock)
    finally:
        conn.close()
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
