"""What ``GET /api/v2/stream`` costs the server: CPU per message and per idle subscriber with
100 subscribers, against the same server without subscribers.

Starts ``convhook serve --no-dispatch`` on a temporary SQLite database (or ``--db postgres``: a
throwaway durable PostgreSQL server) and measures its CPU time (``/proc``) in four windows:

* idle, no stream open, then idle with ``--subscribers`` streams open: the difference per
  subscriber and second is what an idle subscriber costs (the poller and the heartbeats);
* ``--events`` lifecycle transitions (one event each) with no stream open, then the same with
  every subscriber reading all of them: the difference per event is what fanning one message
  out costs, also shown per subscriber.

    .venv/bin/python bench/stream.py [--subscribers 100] [--events 2000] [--idle 5]
                                     [--db postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from _support import (
    cpu_seconds,
    free_port,
    migrated_database,
    postgres_server,
    serve_command,
    wait_for_port,
)

KEY = re.compile(r"chk_[A-Za-z0-9_-]+")


@contextlib.contextmanager
def server(db: str, workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``convhook serve`` without a dispatcher: the process, its URL and the workspace's key."""
    port = free_port()
    out = workdir / "serve.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [*serve_command(port, db), "--no-dispatch"], stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, proc)
        found = KEY.search(out.read_text())
        if found is None:
            raise RuntimeError(f"no key printed:\n{out.read_text()}")
        yield proc, f"http://127.0.0.1:{port}", found[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


class Subscribers:
    """``count`` open streams, each counting the events it reads."""

    def __init__(self, session: aiohttp.ClientSession, base: str, key: str, count: int) -> None:
        self.session, self.base, self.key, self.count = session, base, key, count
        self.received = [0] * count
        self.target = 0
        self.finished = 0
        self.done = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Subscribers:
        opened = [asyncio.Event() for _ in range(self.count)]
        self.tasks = [asyncio.create_task(self._read(i, opened[i])) for i in range(self.count)]
        await asyncio.gather(*(e.wait() for e in opened))
        return self

    async def _read(self, i: int, opened: asyncio.Event) -> None:
        async with self.session.get(
            f"{self.base}/api/v2/stream",
            headers={"x-api-key": self.key, "accept": "text/event-stream"},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as response:
            assert response.status == 200, await response.text()
            opened.set()
            async for line in response.content:
                if line.startswith(b"event: event"):
                    self.received[i] += 1
                    if self.received[i] == self.target:
                        self.finished += 1
                        if self.finished == self.count:
                            self.done.set()

    def expect(self, each: int) -> None:
        """Count the subscribers that have read ``each`` events from now on."""
        self.received = [0] * self.count
        self.target = each

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def transitions(session: aiohttp.ClientSession, base: str, key: str, count: int) -> None:
    """``count`` conversations joined, 32 requests at a time (one event each)."""
    auth = {"x-api-key": key}
    ids: list[str] = []

    async def create() -> None:
        async with session.post(
            f"{base}/api/v2/conversations", json={"agentId": "bench"}, headers=auth
        ) as r:
            ids.append((await r.json())["id"])

    async def join(conversation: str) -> None:
        async with session.post(f"{base}/api/v2/conversations/{conversation}/join", headers=auth):
            pass

    for start in range(0, count, 32):
        await asyncio.gather(*(create() for _ in range(min(32, count - start))))
    for start in range(0, count, 32):
        await asyncio.gather(*(join(c) for c in ids[start : start + 32]))


async def measure(pid: int, base: str, key: str, args: argparse.Namespace) -> dict[str, float]:
    """CPU seconds of the server in the four windows."""
    found: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm up: imports, the first requests, the key cache.
        await transitions(session, base, key, 64)
        before = cpu_seconds(pid)
        await asyncio.sleep(args.idle)
        found["idle"] = cpu_seconds(pid) - before
        # The load without subscribers also pays for creating the conversations; both
        # windows do the same, so the difference is the stream's.
        before = cpu_seconds(pid)
        await transitions(session, base, key, args.events)
        found["load"] = cpu_seconds(pid) - before
        async with Subscribers(session, base, key, args.subscribers) as subs:
            await asyncio.sleep(1)
            before = cpu_seconds(pid)
            await asyncio.sleep(args.idle)
            found["idle_subscribed"] = cpu_seconds(pid) - before
            subs.expect(args.events)
            before = cpu_seconds(pid)
            await transitions(session, base, key, args.events)
            await subs.done.wait()
            found["load_subscribed"] = cpu_seconds(pid) - before
    return found


def table(found: dict[str, float], args: argparse.Namespace, engine: str) -> str:
    n, events, idle = args.subscribers, args.events, args.idle
    per_idle = (found["idle_subscribed"] - found["idle"]) / n / idle
    per_event = (found["load_subscribed"] - found["load"]) / events
    rows = [
        (
            "server CPU, idle (ms/s)",
            found["idle"] / idle * 1e3,
            found["idle_subscribed"] / idle * 1e3,
        ),
        (
            "server CPU per event (ms)",
            found["load"] / events * 1e3,
            found["load_subscribed"] / events * 1e3,
        ),
    ]
    lines = [
        f"stream cost, {engine}, {n} subscribers, {events} events, idle windows of {idle:.0f} s",
        f"{'':34} {'no subscribers':>15} {f'{n} subscribers':>15} {'ratio':>7}",
    ]
    for name, without, with_ in rows:
        ratio = with_ / without if without else float("inf")
        lines.append(f"{name:34} {without:15.3f} {with_:15.3f} {ratio:7.2f}")
    lines.append(f"{'per idle subscriber (ms CPU/s)':34} {per_idle * 1e3:15.4f}")
    lines.append(f"{'per message sent to one subscriber (us)':34} {per_event / n * 1e6:15.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--idle", type=float, default=5.0, help="Seconds of each idle window.")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        if args.db == "postgres":
            pg = stack.enter_context(postgres_server())
            db = migrated_database(pg, "stream_bench", "producer")
        else:
            db = str(workdir / "stream.db")
        proc, base, key = stack.enter_context(server(db, workdir))
        found = asyncio.run(measure(proc.pid, base, key, args))
    print(table(found, args, args.db))


if __name__ == "__main__":
    sys.exit(main())
