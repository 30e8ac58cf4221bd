"""Delivery throughput, latency and backlog drain of ``convhook dispatcher``.

1. Throughput: the outbox of a SQLite database holds N events for one endpoint; a
   ``convhook dispatcher`` process (signing, leasing, recording every attempt durably) drains
   it into a bare ASGI receiver (uvicorn subprocess answering 200). The baseline is a bare
   aiohttp client process POSTing the same bodies to the same receiver with the same
   concurrency. The table shows both rates and their ratio (target: at least 70%).
2. Latency: ``convhook serve`` and ``convhook dispatcher`` on one database; transitions are
   called at 200 events/s and each event's receipt is timed from the start of its API call.
   ``--in-serve`` measures it with the dispatcher inside ``convhook serve`` instead.
3. Backlog: a dispatcher started on a backlog of B events: drain rate and its peak RSS (with
   its SQLite writer process).
4. Retry storm (``--storm``): events recorded at R/s for a healthy endpoint, timed from their
   insert to their receipt, with and without N due retries of another endpoint (answering 503
   at once, or after a second) waiting ahead of them, on SQLite and PostgreSQL. The baseline is
   the run without the storm; the target is a p99 within twice it.

    .venv/bin/python bench/dispatch.py [--events 5000] [--concurrency 32] [--backlog 10000]
                                       [--rate 200] [--seconds 10] [--runs 1]
                                       [--throughput-only]
    .venv/bin/python bench/dispatch.py --storm [--retries 10000] [--rate 100] [--seconds 10]

With ``--db postgresql://...`` (or ``--db temp``: a throwaway durable server) it measures
scale-out instead: the same drain with 1, 2 and 4
``convhook dispatcher`` processes sharing that database (``--dispatchers 1,2,4``), against the
bare client baseline, and prints each rate and its ratio to one dispatcher. Each run uses a
new workspace and endpoint; the rows it writes stay (use a throwaway database).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _support import (
    BARE_APP,
    cpu_seconds,
    free_port,
    migrated_database,
    postgres_server,
    serve_command,
    wait_for_port,
)
from convhook.ids import new_id
from convhook.samples import sample_event
from convhook.signing import Secret

try:
    from convhook.store.delivery import endpoints as endpoint_store
    from convhook.store.engine import migrations
    from convhook.store.engine.migrations import apply_sqlite
    from convhook.store.engine.sqlite import connect
except ImportError:  # a revision before store/ had subpackages (bench/compare.py runs those)
    from convhook.store.migrations import apply_sqlite  # type: ignore[import-not-found,no-redef]
    from convhook.store.sqlite import connect  # type: ignore[import-not-found,no-redef]

    from convhook.store import endpoints as endpoint_store  # type: ignore[attr-defined,no-redef]
    from convhook.store import migrations  # type: ignore[attr-defined,no-redef]

KEY = re.compile(r"chk_[A-Za-z0-9_-]+")
ACTIONS = ("join", "leave", "end", "analysis")


BARE_CLIENT = """
import asyncio, json, os, sys, time
import aiohttp

async def main(url, path, concurrency):
    bodies = [b.encode() for b in json.load(open(path))]
    it = iter(bodies)
    async def worker(session):
        for body in it:
            async with session.post(url, data=body, headers={"content-type": "application/json"},
                                    allow_redirects=False) as r:
                await r.read()
                assert r.status == 200
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        start, cpu = time.perf_counter(), os.times()
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
        end = os.times()
        print(time.perf_counter() - start, end.user - cpu.user + end.system - cpu.system)

try:
    import uvloop  # the dispatcher runs on uvloop when installed: same loop for both
    uvloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
except ImportError:
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@contextlib.contextmanager
def process(args: list[str], cwd: Path, port: int | None = None) -> Iterator[subprocess.Popen[Any]]:
    """A subprocess in its own group (stderr to ``<pid>.err``), stopped with SIGTERM after."""
    err = (cwd / "starting.err").open("wb")
    proc = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
    )
    Path(err.name).rename(cwd / f"{proc.pid}.err")
    try:
        if port is not None:
            wait_for_port(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        err.close()


def receiver(tmp: Path, app: str = BARE_APP) -> tuple[list[str], int]:
    """The bare receiver's (or ``app``'s) command line and port."""
    (tmp / "bare_receiver.py").write_text(app)
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "bare_receiver:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]
    return args, port


def open_db(path: Path) -> sqlite3.Connection:
    conn = connect(path, synchronous="NORMAL")
    apply_sqlite(conn, migrations.load("sqlite", "producer"))
    return conn


def setup_endpoint(conn: sqlite3.Connection, url: str, concurrency: int) -> str:
    """One workspace (if none) and one endpoint to ``url``; returns the workspace id."""
    row = conn.execute("SELECT id FROM workspaces LIMIT 1").fetchone()
    now = int(time.time() * 1000)
    if row is None:
        ws = new_id("ws")
        conn.execute(
            "INSERT INTO workspaces (id, name, created_at) VALUES (?, 'bench', ?)", (ws, now)
        )
    else:
        ws = row[0]
    endpoint_store.create(
        conn,
        endpoint_id=new_id("ep"),
        workspace_id=ws,
        url=url,
        secret=str(Secret.generate()),
        now=now,
        max_in_flight=concurrency,
    )
    return str(ws)


def fill(conn: sqlite3.Connection, ws: str, count: int) -> list[str]:
    """Record ``count`` events (one conversation each) in one transaction; return bodies."""
    template = sample_event("conversation.userJoined").to_json().decode()
    old_id = json.loads(template)["eventId"]
    bodies = []
    now = int(time.time() * 1000)
    conn.execute("BEGIN")
    for _ in range(count):
        event_id = new_id("evt")
        body = template.replace(old_id, event_id)
        bodies.append(body)
        conn.execute(
            "INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, "
            "event_type, body, created_at) VALUES (?, ?, ?, 1, 'conversation.userJoined', ?, ?)",
            (event_id, ws, new_id("conv"), body, now),
        )
    conn.execute("COMMIT")
    return bodies


def remaining(conn: sqlite3.Connection) -> int:
    """Deliveries not yet finished (counted on a partial index, so polling stays cheap)."""
    value: int = conn.execute(
        "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'delivering')"
    ).fetchone()[0]
    return value


def dispatcher_args(db: Path | str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "convhook",
        "dispatcher",
        "--db",
        str(db),
        "--allow-private-targets",
        "--log-level",
        "warning",
        "--poll-interval",
        "0.05",
        *extra,
    ]


def wait_ready(proc: subprocess.Popen[Any]) -> None:
    """Give the dispatcher time to import and open the database."""
    time.sleep(1.5)
    if proc.poll() is not None:
        raise RuntimeError("dispatcher exited early")


def drain(conn: sqlite3.Connection, timeout: float, every: float = 0.02) -> float:
    """Seconds until no delivery is left to do, polled ``every`` seconds (the count itself
    costs CPU on a big backlog, so big runs poll less often)."""
    start = time.perf_counter()
    while remaining(conn):
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{remaining(conn)} deliveries left after {timeout} s")
        time.sleep(every)
    return time.perf_counter() - start


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a live process (Linux), plus that of its live children (the dispatcher's
    SQLite writer process), in MiB."""
    total = float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            total = int(line.split()[1]) / 1024
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        with contextlib.suppress(OSError):
            total += peak_rss_mib(int(child))
    return total


def bare_client(tmp: Path, url: str, bodies: list[str], concurrency: int) -> tuple[float, float]:
    """Seconds and CPU seconds the bare aiohttp client takes to POST ``bodies`` to ``url``."""
    (tmp / "bodies.json").write_text(json.dumps(bodies))
    (tmp / "bare_client.py").write_text(BARE_CLIENT)
    out = subprocess.run(
        [sys.executable, "bare_client.py", url, "bodies.json", str(concurrency)],
        cwd=tmp,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, cpu = (float(v) for v in out.stdout.split())
    return seconds, cpu


def throughput(tmp: Path, events: int, concurrency: int, sync: str) -> dict[str, float]:
    """Dispatcher drain rate vs a bare aiohttp client to the same receiver."""
    args, port = receiver(tmp)
    url = f"http://127.0.0.1:{port}/webhook"
    db = tmp / "throughput.db"
    conn = open_db(db)
    ws = setup_endpoint(conn, url, concurrency)
    with process(args, tmp, port):
        with process(dispatcher_args(db, "--synchronous", sync), tmp) as proc:
            wait_ready(proc)
            cpu = cpu_seconds(proc.pid)
            bodies = fill(conn, ws, events)
            seconds = drain(conn, 300)
            cpu = cpu_seconds(proc.pid) - cpu
        bare_seconds, bare_cpu = bare_client(tmp, url, bodies, concurrency)
    failed = conn.execute("SELECT count(*) FROM deliveries WHERE status != 'delivered'")
    assert failed.fetchone()[0] == 0, "some deliveries failed"
    conn.close()
    return {
        "dispatcher": events / seconds,
        "bare": events / bare_seconds,
        "dispatcher_cpu_us": cpu / events * 1e6,
        "bare_cpu_us": bare_cpu / events * 1e6,
    }


def backlog(tmp: Path, count: int, concurrency: int, sync: str) -> dict[str, float]:
    """Drain rate and peak RSS of a dispatcher started on a backlog of ``count`` events."""
    args, port = receiver(tmp)
    db = tmp / "backlog.db"
    conn = open_db(db)
    ws = setup_endpoint(conn, f"http://127.0.0.1:{port}/webhook", concurrency)
    fill(conn, ws, count)
    with process(args, tmp, port), process(dispatcher_args(db, "--synchronous", sync), tmp) as p:
        start = time.perf_counter()
        while conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0:
            time.sleep(0.01)
        first = time.perf_counter()
        seconds = drain(conn, 1800, every=max(0.02, count / 200_000))
        rss = peak_rss_mib(p.pid)
    conn.close()
    return {"rate": count / seconds, "rss": rss, "startup": first - start}


async def latency(tmp: Path, rate: float, seconds: float, in_serve: bool) -> dict[str, float]:
    """p50/p99 from the start of a transition call to the event's receipt, at ``rate``/s."""
    from aiohttp import web

    arrivals: dict[tuple[str, str], float] = {}
    expected = [0]
    complete = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        doc = json.loads(await request.read())
        arrivals[(doc["payload"]["id"], doc["eventType"])] = time.perf_counter()
        if expected[0] and len(arrivals) >= expected[0]:
            complete.set()
        return web.Response(text="Webhook received successfully")

    app = web.Application()
    app.router.add_post("/webhook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    db = tmp / "latency.db"
    api_port = free_port()
    serve = serve_command(api_port, str(db))
    # Either serve's own dispatcher delivers (allowed to reach this machine's receiver), or
    # it stays off so the separate dispatcher process alone is measured.
    serve.append("--allow-private-targets" if in_serve else "--no-dispatch")
    sent: dict[tuple[str, str], float] = {}
    try:
        with process(serve, tmp, api_port) as proc:
            text = (tmp / f"{proc.pid}.err").read_text()
            key = KEY.search(text)
            assert key, text
            conn = open_db(db)
            setup_endpoint(conn, f"http://127.0.0.1:{hook_port}/webhook", 10)
            conn.close()
            separate = [] if in_serve else dispatcher_args(db, "--poll-interval", "0.5")
            with process(separate, tmp) if separate else contextlib.nullcontext():
                await asyncio.sleep(1.5)
                sent = await _drive(api_port, key[0], rate, seconds)
                expected[0] = len(sent)
                if len(arrivals) < len(sent):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(complete.wait(), 30)
    finally:
        await runner.cleanup()
    waits = sorted((arrivals[k] - sent[k]) * 1000 for k in sent if k in arrivals)
    return {
        "p50": statistics.median(waits),
        "p99": waits[min(len(waits) - 1, int(len(waits) * 0.99))],
        "events": float(len(sent)),
        "received": float(len(waits)),
    }


async def _drive(port: int, key: str, rate: float, seconds: float) -> dict[tuple[str, str], float]:
    import aiohttp

    base = f"http://127.0.0.1:{port}/api/v2"
    headers = {"x-api-key": key, "content-type": "application/json"}
    total = int(rate * seconds)
    sent: dict[tuple[str, str], float] = {}
    types = dict(
        zip(
            ACTIONS,
            (
                "conversation.userJoined",
                "conversation.userLeft",
                "conversation.completed",
                "conversation.analysisCompleted",
            ),
            strict=True,
        )
    )
    async with aiohttp.ClientSession(headers=headers) as http:
        conversations = []
        for _ in range(total // 4 + 1):
            async with http.post(base + "/conversations", json={"agentId": "agent_1"}) as r:
                conversations.append((await r.json())["id"])
        # Groups of 50 conversations: all joins, then all leaves...: a conversation's next
        # call comes 50 calls (250 ms at 200/s) after its previous one.
        order = [(i // 50, a, i) for i in range(len(conversations)) for a in range(4)]
        calls = [(conversations[i], ACTIONS[a]) for _, a, i in sorted(order)][:total]
        start = time.perf_counter()
        tasks = []

        last: dict[str, asyncio.Task[None]] = {}

        async def call(conv: str, action: str, prior: asyncio.Task[None] | None) -> None:
            if prior is not None:
                await prior  # a conversation's calls go in order, even when the API is slow
            sent[(conv, types[action])] = time.perf_counter()
            async with http.post(f"{base}/conversations/{conv}/{action}", json={}) as r:
                await r.read()
                assert r.status == 200, await r.text()

        for i, (conv, action) in enumerate(calls):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(call(conv, action, last.get(conv)))
            last[conv] = task
            tasks.append(task)
        await asyncio.gather(*tasks)
    return sent


def pg_fill(
    url: str, hook: str, events: int, in_flight: int, analyze: bool = True
) -> tuple[str, list[str]]:
    """A new workspace and endpoint on PostgreSQL and ``events`` events for it, recorded in
    one transaction; returns the endpoint id and the bodies."""
    import psycopg

    try:
        from convhook.store.engine.postgres import PgConnection
    except ImportError:  # a revision before store/ had subpackages
        from convhook.store.postgres import PgConnection  # type: ignore[import-not-found,no-redef]

    template = sample_event("conversation.userJoined").to_json().decode()
    old_id = json.loads(template)["eventId"]
    now = int(time.time() * 1000)
    ws, endpoint = new_id("ws"), new_id("ep")
    bodies, rows = [], []
    for _ in range(events):
        event_id = new_id("evt")
        body = template.replace(old_id, event_id)
        bodies.append(body)
        rows.append((event_id, ws, new_id("conv"), body, now))
    with psycopg.connect(url, autocommit=True) as raw:
        conn = PgConnection(raw)
        conn.execute(
            "INSERT INTO workspaces (id, name, created_at) VALUES (?, 'bench', ?)", (ws, now)
        )
        endpoint_store.create(
            conn,
            endpoint_id=endpoint,
            workspace_id=ws,
            url=hook,
            secret=str(Secret.generate()),
            now=now,
            max_in_flight=in_flight,
        )
        with raw.transaction(), raw.cursor() as cur:
            cur.executemany(
                "INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, "
                "event_type, body, created_at) VALUES (%s, %s, %s, 1, "
                "'conversation.userJoined', %s, %s)",
                rows,
            )
            if analyze:
                # Planner statistics: a table in service has them (autovacuum); one filled a
                # moment ago does not, and without them the claim's due scan is planned as a
                # sort of the whole backlog (see docs/delivery.md).
                cur.execute("ANALYZE deliveries, events")
    return endpoint, bodies


def pg_drain(url: str, endpoint: str, timeout: float) -> float:
    """Seconds until the endpoint has nothing pending or in flight."""
    import psycopg

    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            # Through the partial indexes of pending and leased rows: a count of the endpoint's
            # backlog, 50 times a second, took about as much of the server's CPU as the claims
            # it measures.
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM deliveries WHERE status = 'pending' "
                "AND next_attempt_at > -1 AND endpoint_id = %s) OR EXISTS (SELECT 1 FROM "
                "deliveries WHERE status = 'delivering' AND endpoint_id = %s)",
                (endpoint, endpoint),
            ).fetchone()
            if row is not None and not row[0]:
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{row} deliveries left after {timeout} s")
            time.sleep(0.02)


class MachineBusy:
    """The share of all CPUs' time spent busy from now until :meth:`share` (Linux)."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle and iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    def share(self) -> float:
        busy, total = self._read()
        return (busy - self._start[0]) / max(1, total - self._start[1])


def scaling(
    tmp: Path, url: str, events: int, concurrency: int, counts: list[int], analyze: bool
) -> None:
    """Drain rate with 1, 2, 4... dispatcher processes on one PostgreSQL database."""
    import asyncio as aio

    from convhook.store import open_database

    async def upgrade() -> None:
        async with open_database(url, "producer", auto_upgrade=True):
            pass

    aio.run(upgrade())
    args, port = receiver(tmp)
    hook = f"http://127.0.0.1:{port}/webhook"
    rates: dict[int, float] = {}
    used: dict[int, tuple[float, float]] = {}  # dispatchers' CPU per event, machine busy share
    with process(args, tmp, port):
        bodies: list[str] = []
        for n in counts:
            with contextlib.ExitStack() as stack:
                procs = [
                    stack.enter_context(
                        process(dispatcher_args(url, "--max-in-flight", str(concurrency)), tmp)
                    )
                    for _ in range(n)
                ]
                for proc in procs:
                    wait_ready(proc)
                start = time.perf_counter()
                endpoint, bodies = pg_fill(
                    url, hook, events, concurrency * max(counts), analyze=analyze
                )
                fill_s = time.perf_counter() - start
                cpu, busy = sum(cpu_seconds(p.pid) for p in procs), MachineBusy()
                seconds = pg_drain(url, endpoint, 600)
                cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu
                used[n] = (cpu / events * 1e6, busy.share())
            # The fill commits in one transaction; delivery starts at its commit.
            rates[n] = events / seconds
            print(
                f"  {n} dispatcher(s): {rates[n]:,.0f} events/s (fill {fill_s:.1f} s)",
                file=sys.stderr,
            )
        bare = events / bare_client(tmp, hook, bodies, concurrency)[0]
    first = rates[counts[0]]
    print(f"{'measure':<36}  {'value':<18}  note")
    print(f"{'bare aiohttp client (baseline)':<36}  {bare:>10,.0f} ev/s")
    for n, rate in rates.items():
        label = f"{n} dispatcher process(es), PostgreSQL"
        note = f"x{rate / first:.2f} of {counts[0]}; {rate / bare:.0%} of baseline"
        cpu, busy = used[n]
        note += f"; dispatchers' CPU {cpu:.0f} us/event; all CPUs {busy:.0%} busy"
        print(f"{label:<36}  {rate:>10,.0f} ev/s  {note}")
    # More processes only add throughput while the machine has idle CPU: the receiver,
    # PostgreSQL and the dispatchers share its cores here.
    print(f"({os.cpu_count()} CPUs: receiver, PostgreSQL and dispatchers share them)")


# The storm's endpoint: answers 503, after DELAY seconds.
DOWN_APP = """
import asyncio

DELAY = {delay}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    if DELAY:
        await asyncio.sleep(DELAY)
    await send({{"type": "http.response.start", "status": 503,
                "headers": [(b"content-length", b"0")]}})
    await send({{"type": "http.response.body", "body": b""}})
"""


def _event_row(ws: str, template: str, old_id: str, now: int) -> tuple[str, tuple[Any, ...]]:
    event_id = new_id("evt")
    return event_id, (event_id, ws, new_id("conv"), template.replace(old_id, event_id), now)


_INSERT_EVENT = (
    "INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, event_type, "
    "body, created_at) VALUES (?, ?, ?, 1, 'conversation.userJoined', ?, ?)"
)


class _Storm:
    """One database of either engine, with a storm endpoint and a healthy one in their own
    workspaces (an event fans out only to its workspace's endpoints)."""

    def __init__(self, target: str, storm_url: str, healthy_url: str) -> None:
        self.target = target
        conn = self.connect()
        self.storm_ws, self.storm = self._endpoint(conn, storm_url)
        self.healthy_ws, self.healthy = self._endpoint(conn, healthy_url)
        conn.close()

    @property
    def postgres(self) -> bool:
        return self.target.startswith("postgresql://")

    def connect(self) -> Any:
        if not self.postgres:
            return open_db(Path(self.target))
        import psycopg

        from convhook.store.engine.postgres import PgConnection

        return PgConnection(psycopg.connect(self.target, autocommit=True))

    def close(self, conn: Any) -> None:
        (conn.raw if self.postgres else conn).close()

    def _endpoint(self, conn: Any, url: str) -> tuple[str, str]:
        now = int(time.time() * 1000)
        ws, endpoint = new_id("ws"), new_id("ep")
        conn.execute(
            "INSERT INTO workspaces (id, name, created_at) VALUES (?, 'bench', ?)", (ws, now)
        )
        endpoint_store.create(
            conn,
            endpoint_id=endpoint,
            workspace_id=ws,
            url=url,
            secret=str(Secret.generate()),
            now=now,
        )
        return ws, endpoint

    def add_retries(self, count: int) -> None:
        """``count`` deliveries to the storm endpoint that failed twice and are due now."""
        template = sample_event("conversation.userJoined").to_json().decode()
        old_id = json.loads(template)["eventId"]
        now = int(time.time() * 1000)
        rows = [_event_row(self.storm_ws, template, old_id, now)[1] for _ in range(count)]
        conn = self.connect()
        conn.execute("BEGIN")
        if self.postgres:
            with conn.raw.cursor() as cur:
                cur.executemany(_INSERT_EVENT.replace("?", "%s"), rows)
        else:
            conn.executemany(_INSERT_EVENT, rows)
        conn.execute(
            "UPDATE deliveries SET attempts = 2, next_attempt_at = ? WHERE endpoint_id = ?",
            (now - 60_000, self.storm),
        )
        conn.execute("COMMIT")
        if self.postgres:
            conn.execute("ANALYZE deliveries, events")  # as autovacuum would have
        self.close(conn)

    def due_retries(self) -> int:
        conn = self.connect()
        row = conn.execute(
            "SELECT count(*) FROM deliveries WHERE endpoint_id = ? AND status = 'pending' "
            "AND next_attempt_at <= ?",
            (self.storm, int(time.time() * 1000)),
        ).fetchone()
        self.close(conn)
        return int(row[0])

    def storm_seconds(self) -> float:
        """From the storm endpoint's first attempt of this run to its last."""
        conn = self.connect()
        row = conn.execute(
            "SELECT min(last_attempt_at), max(last_attempt_at) FROM deliveries "
            "WHERE endpoint_id = ?",
            (self.storm,),
        ).fetchone()
        self.close(conn)
        return (row[1] - row[0]) / 1000 if row[0] is not None else 0.0

    def produce(self, rate: float, seconds: float, sent: dict[str, float]) -> None:
        """Record events for the healthy endpoint at ``rate``/s, noting when each began."""
        template = sample_event("conversation.userJoined").to_json().decode()
        old_id = json.loads(template)["eventId"]
        conn = self.connect()
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            event_id, row = _event_row(self.healthy_ws, template, old_id, int(time.time() * 1000))
            sent[event_id] = time.perf_counter()
            conn.execute(_INSERT_EVENT, row)
        self.close(conn)


async def storm(
    tmp: Path, target: str, retries: int, delay: float, rate: float, seconds: float
) -> dict[str, float]:
    """p50/p99 from an event's insert to its receipt at a healthy endpoint, while ``retries``
    due retries of a failing endpoint (answering 503 after ``delay`` s) wait ahead of it."""
    from aiohttp import web

    arrivals: dict[str, float] = {}
    complete = asyncio.Event()
    expected = [0]

    async def healthy(request: web.Request) -> web.Response:
        arrivals[json.loads(await request.read())["eventId"]] = time.perf_counter()
        if expected[0] and len(arrivals) >= expected[0]:
            complete.set()
        return web.Response(text="Webhook received successfully")

    app = web.Application()
    app.router.add_post("/ok", healthy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    # The failing endpoint is a process of its own, as it would be another server: its
    # requests do not hold up the loop that times the healthy endpoint's.
    down_args, down_port = receiver(tmp, DOWN_APP.format(delay=delay))
    setup = _Storm(target, f"http://127.0.0.1:{down_port}/down", f"http://127.0.0.1:{port}/ok")
    if retries:
        setup.add_retries(retries)
    sent: dict[str, float] = {}
    try:
        with (
            process(down_args, tmp, down_port),
            process(dispatcher_args(target), tmp) as proc,
        ):
            await asyncio.sleep(1.5)
            if proc.poll() is not None:
                raise RuntimeError("dispatcher exited early")
            await asyncio.to_thread(setup.produce, rate, seconds, sent)
            left = setup.due_retries() if retries else 0
            lasted = setup.storm_seconds()
            expected[0] = len(sent)
            if len(arrivals) < len(sent):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(complete.wait(), 60)
    finally:
        await runner.cleanup()
    waits = sorted((arrivals[k] - sent[k]) * 1000 for k in sent if k in arrivals)
    return {
        "p50": statistics.median(waits),
        "p99": waits[min(len(waits) - 1, int(len(waits) * 0.99))],
        "events": float(len(sent)),
        "received": float(len(waits)),
        "left": float(left),
        "storm_s": lasted,
    }


def storms(tmp: Path, retries: int, rate: float, seconds: float, runs: int) -> None:
    """The retry-storm table: each engine without the storm, then with one whose endpoint
    fails at once (the storm is over in seconds, using every core meanwhile) and with one
    whose endpoint takes a second to fail (its retries stay due throughout), ``runs`` times."""
    cases = [(0, 0.0), (retries, 0.0), (retries, 1.0)]
    rows = []
    with postgres_server() as pg:
        for n in range(runs):
            for engine in ("sqlite", "postgres"):
                baseline = 0.0
                for case, (count, delay) in enumerate(cases):
                    run_dir = tmp / f"storm{n}-{engine}-{case}"
                    run_dir.mkdir()
                    if engine == "sqlite":
                        target = str(run_dir / "storm.db")
                        open_db(Path(target)).close()
                    else:
                        target = migrated_database(pg, f"storm{n}_{case}", "producer")
                    got = asyncio.run(storm(run_dir, target, count, delay, rate, seconds))
                    print(f"  {engine} retries={count} delay={delay}: {got}", file=sys.stderr)
                    value = f"p50 {got['p50']:.1f} ms, p99 {got['p99']:.1f} ms"
                    note = f"{got['received']:.0f}/{got['events']:.0f} received"
                    if not count:
                        baseline = got["p99"]
                        rows.append((f"{engine}, no retries due", value, note + " (baseline)"))
                        continue
                    label = f"{engine}, {count:,} retries due, 503 after {delay:g} s"
                    note += (
                        f", storm of {got['storm_s']:.1f} s, {got['left']:,.0f} still due "
                        f"at the end; p99 x{got['p99'] / baseline:.2f} of baseline (target <= 2)"
                    )
                    rows.append((label, value, note))
    width = max(len(r[0]) for r in rows)
    print(f"fresh events at {rate:g}/s to a healthy endpoint, insert -> receipt")
    print(f"{'measure':<{width}}  {'value':<28}  note")
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:<28}  {note}")


@contextlib.contextmanager
def temporary_postgres(db: str) -> Iterator[str]:
    """``db`` itself, or with ``--db temp`` a throwaway durable (fsync on) PostgreSQL server."""
    if db != "temp":
        yield db
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.postgres import TemporaryPostgres

    with TemporaryPostgres(durable=True) as server:
        yield server.create_database("bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument(
        "--in-serve",
        action="store_true",
        help="latency with the dispatcher inside `convhook serve` (not a separate process)",
    )
    parser.add_argument("--runs", type=int, default=1, help="how many times to measure")
    parser.add_argument(
        "--storm",
        action="store_true",
        help="only the retry-storm case: fresh events' latency with and without due retries",
    )
    parser.add_argument("--retries", type=int, default=10_000, help="due retries in the storm")
    parser.add_argument(
        "--throughput-only", action="store_true", help="skip the latency and backlog parts"
    )
    parser.add_argument(
        "--db",
        help="postgresql:// URL, or `temp` for a throwaway server: measure scale-out over processes",
    )
    parser.add_argument("--dispatchers", default="1,2,4", help="process counts with --db")
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="with --db: leave the filled tables without planner statistics",
    )
    args = parser.parse_args()
    if args.storm:
        with tempfile.TemporaryDirectory(prefix="convhook-bench-") as name:
            print(
                f"retry storm: {args.retries} due retries, fresh events at {args.rate:g}/s "
                f"for {args.seconds:g} s, {args.runs} run(s)",
                file=sys.stderr,
            )
            storms(Path(name), args.retries, args.rate, args.seconds, args.runs)
        return
    if args.db:
        counts = [int(n) for n in args.dispatchers.split(",")]
        with (
            tempfile.TemporaryDirectory(prefix="convhook-bench-") as name,
            temporary_postgres(args.db) as url,
        ):
            print(f"scale-out: {args.events} events on {url.split('@')[-1]}", file=sys.stderr)
            for _ in range(args.runs):
                scaling(Path(name), url, args.events, args.concurrency, counts, args.analyze)
        return
    with tempfile.TemporaryDirectory(prefix="convhook-bench-") as name:
        tmp = Path(name)
        print(
            f"throughput: {args.events} events, concurrency {args.concurrency}, "
            f"SQLite synchronous={args.synchronous}, {args.runs} run(s)",
            file=sys.stderr,
        )
        runs = []
        for n in range(args.runs):
            run_dir = tmp / f"run{n}"
            run_dir.mkdir()
            runs.append(throughput(run_dir, args.events, args.concurrency, args.synchronous))
            print(f"  {runs[-1]}", file=sys.stderr)
        rows = []
        for t in runs:
            ratio = t["dispatcher"] / t["bare"]
            rows += [
                (
                    "bare aiohttp client (baseline)",
                    f"{t['bare']:,.0f} events/s",
                    f"CPU {t['bare_cpu_us']:.0f} us/event",
                ),
                (
                    "convhook dispatcher",
                    f"{t['dispatcher']:,.0f} events/s",
                    f"{ratio:.0%} of baseline (target >= 70%), "
                    f"CPU {t['dispatcher_cpu_us']:.0f} us/event",
                ),
            ]
        if not args.throughput_only:
            print(f"latency: {args.rate:g} events/s for {args.seconds:g} s", file=sys.stderr)
            lat = asyncio.run(latency(tmp, args.rate, args.seconds, args.in_serve))
            print(f"  {lat}", file=sys.stderr)
            print(f"backlog: {args.backlog} events", file=sys.stderr)
            b = backlog(tmp, args.backlog, args.concurrency, args.synchronous)
            rows += [
                (
                    f"latency at {args.rate:g} ev/s, API call -> receipt",
                    f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms",
                    f"{lat['received']:.0f}/{lat['events']:.0f} received",
                ),
                (
                    f"drain of a {args.backlog:,} backlog",
                    f"{b['rate']:,.0f} events/s",
                    f"peak RSS {b['rss']:.0f} MiB, first delivery after {b['startup']:.1f} s",
                ),
            ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<28}  note")
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:<28}  {note}")


if __name__ == "__main__":
    main()
