"""The writer process itself: ``python -m convhook.store.engine.writer_child FD``.

Its parent (:class:`~convhook.store.engine.writer_process.WriterProcess`) passes it one end
of a socket pair. The first frame names the database (engine, where, the engine's setting:
sent over the socket, since a PostgreSQL DSN may hold a password); the child opens it and
answers. Then it reads request frames (:mod:`.operations`), runs every request that is waiting
as one group commit (:mod:`.groupcommit`, as the writer thread does), and only then answers
them all. A lost PostgreSQL connection fails its batch as retryable, and the next batch opens
another. It ignores SIGINT and SIGTERM and exits when the parent closes the socket or dies.
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from convhook.errors import StoreError
from convhook.store.engine.groupcommit import Job, Link
from convhook.store.engine.operations import LENGTH, OPEN, REQUEST, operation, resolve


def serve(link: Link, sock: socket.socket, buffer: bytearray) -> None:
    """Answer the parent's requests until it closes the socket (or dies); ``buffer`` holds
    what was read after the opening frame."""
    encode = msgspec.msgpack.Encoder().encode
    while True:
        # Requests sent right behind the opening frame are in the buffer already: waiting for
        # more before running them would leave their callers waiting for the next request.
        if not _whole_frame(buffer):
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
            replies = [_encoded(encode, reply) for reply in run_batch(link, frames)]
            try:
                sock.sendall(b"".join(LENGTH.pack(len(r)) + r for r in replies))
            except (BrokenPipeError, ConnectionResetError):  # the parent is gone
                return


def _whole_frame(buffer: bytearray) -> bool:
    return len(buffer) >= 4 and len(buffer) - 4 >= LENGTH.unpack_from(buffer)[0]


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


def run_batch(link: Link, frames: list[bytes]) -> list[tuple[int, bool, Any]]:
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
    link.run([job for _, job in jobs])
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


def open_link(engine: str, target: str, setting: str) -> Link:
    """The connection to write through, opened as the parent's database would open it."""
    if engine == "sqlite":
        from convhook.store.engine import sqlite

        def sqlite_connection() -> sqlite.SQLiteConnection:
            return sqlite.connect(target, synchronous=setting)

        return Link(sqlite.group_commit(target), sqlite_connection, sqlite_connection())
    if engine == "postgres":
        from convhook.store.engine import postgres

        def pg_connection() -> postgres.PgConnection:
            return postgres.connect(target, float(setting))

        return Link(postgres.group_commit(target), pg_connection, pg_connection())
    raise StoreError(f"unknown engine {engine!r} for the writer process")


def _first_frame(sock: socket.socket) -> tuple[bytes, bytearray]:
    """The opening frame, and whatever arrived after it."""
    buffer = bytearray()
    while not _whole_frame(buffer):
        data = sock.recv(1 << 16)
        if not data:
            raise EOFError("the parent closed the socket before naming the database")
        buffer += data
    (size,) = LENGTH.unpack_from(buffer)
    return bytes(buffer[4 : 4 + size]), buffer[4 + size :]


def main(argv: list[str]) -> None:
    (fd,) = argv
    # The parent decides when to stop (it closes the socket after its last write): a signal
    # sent to this process by mistake must not cut that write off either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(fd))
    encode = msgspec.msgpack.Encoder().encode
    link = None
    try:
        try:
            frame, rest = _first_frame(sock)
        except (EOFError, ConnectionResetError):
            return
        try:
            seq, engine, target, setting = OPEN.decode(frame)
            link = open_link(engine, target, setting)
        except Exception as exc:  # noqa: BLE001 - any driver error: the parent reports it
            refused = encode((0, False, f"the writer process cannot open the database: {exc}"))
            sock.sendall(LENGTH.pack(len(refused)) + refused)
            return
        ready = encode((seq, True, None))
        sock.sendall(LENGTH.pack(len(ready)) + ready)
        serve(link, sock, rest)
    finally:
        if link is not None:
            link.close()
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
