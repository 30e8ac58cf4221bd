"""Whether the producer's indexes keep the delivery and event queries fast at 10 M rows.

Two databases are filled in the same run: the subject (``--rows`` deliveries, default
10,000,000, and as many events: conversations of 4 events each, 4 workspaces, 2 endpoints per
workspace, each event going to one of them, and a small endpoint taking 1 % of one workspace) and the baseline (``--small`` rows, default
100,000). Both hold the same backlog, so only the history grows: 10,000 of the newest
deliveries waiting (80 of them leased), one endpoint down whose last ~4,000 deliveries wait
(half retries due in the next hour, half due but behind them in their conversation), 0.3 % of
the rest failed and everything else delivered. Rows are written set-based (``INSERT ...
SELECT`` from ``generate_series`` on PostgreSQL, a recursive CTE on SQLite) with the
secondary indexes and the fan-out trigger set aside and rebuilt afterwards, then vacuumed
and analysed (PostgreSQL; SQLite is left without statistics, as convhook leaves it, unless
``--sqlite-analyze``).

Each query is the code's own: the dispatcher's claim runs through ``Database.write`` (and is
rolled back, so every run sees the same backlog), the others through ``Database.read`` on one
reader connection (so PostgreSQL's cached plans are what a long-running process uses). The
table shows the median over ``--runs``, the plan of the subject (EXPLAIN (ANALYZE, BUFFERS)
on PostgreSQL, EXPLAIN QUERY PLAN on SQLite) and the ratio subject/baseline: an index keeps
it near 1x, a scan grows with the table.

    .venv/bin/python bench/indexes.py [--rows 10000000] [--engine postgres|sqlite|both]
                                      [--sqlite-rows N] [--small 100000] [--runs 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convhook.store.delivery import claims as delivery_claims
from convhook.store.delivery import log as delivery_log
from convhook.store.delivery.store import claim
from convhook.store.engine.database import Database
from convhook.store.engine.migrations import load
from convhook.store.engine.sqlite import SQLiteConnection, SQLiteDatabase
from convhook.store.producer import event_log

WORKSPACES = 4
NEW_BACKLOG = 10_000  # the newest deliveries, still waiting
LEASED = 80  # the oldest of those, leased by a dispatcher
DOWN_WINDOW = 32_000  # rows before the new backlog where endpoint ep_7 has been down
BLOCK = 1_000  # conversations whose events interleave in the outbox
TYPES = (
    "conversation.userJoined",
    "conversation.userLeft",
    "conversation.completed",
    "conversation.analysisCompleted",
)


@dataclass(frozen=True)
class Shape:
    """Where things are in a filled database of ``rows`` deliveries."""

    rows: int
    now: int

    @property
    def base(self) -> int:
        # Events are 10 ms apart and the newest is a minute old.
        return self.now - self.rows * 10 - 60_000

    def event_id(self, k: int) -> str:
        return f"evt_{self.base + k * 10:012x}{k:016x}"

    def conversation(self, k: int) -> tuple[str, str]:
        c = (k // (4 * BLOCK)) * BLOCK + k % BLOCK
        return f"ws_{c % WORKSPACES}", f"conv_{self.base:012x}{c:016x}"


# The deliveries, derived from the events already loaded (same SQL on both engines).
_DELIVERIES = """
INSERT INTO deliveries (id, event_seq, event_id, endpoint_id, workspace_id, conversation_id,
    conversation_seq, event_type, status, attempts, next_attempt_at, lease_owner,
    lease_expires_at, last_status_code, last_attempt_at, delivered_at, created_at, updated_at)
SELECT seq, seq, id, ep, workspace_id, conversation_id, conversation_seq, event_type, status,
    CASE status WHEN 'delivered' THEN 1 WHEN 'failed' THEN 8
         ELSE CASE WHEN ep = 'ep_7' AND conversation_seq = 3 THEN 3 ELSE 0 END END,
    CASE WHEN status = 'pending' AND ep = 'ep_7' AND conversation_seq = 3
         AND k < {n} - {new} THEN {now} + (k % 3600) * 1000 ELSE created_at END,
    CASE status WHEN 'delivering' THEN 'bench' END,
    CASE status WHEN 'delivering' THEN {now} + 60000 END,
    CASE status WHEN 'delivered' THEN 200 WHEN 'failed' THEN 500 END,
    CASE WHEN status IN ('delivered', 'failed') THEN created_at + 150 END,
    CASE status WHEN 'delivered' THEN created_at + 150 END,
    created_at, created_at
FROM (SELECT e1.*, CASE
          WHEN k >= {n} - {new} + {leased} THEN 'pending'
          WHEN k >= {n} - {new} THEN 'delivering'
          WHEN ep = 'ep_7' AND k >= {n} - {new} - {down} THEN 'pending'
          WHEN k % 331 = 7 THEN 'failed'
          ELSE 'delivered' END AS status
      FROM (SELECT e.*, e.seq - 1 AS k,
                   CASE WHEN e.workspace_id = 'ws_0' AND e.seq % 100 = 1 THEN 'ep_8'
                        ELSE 'ep_' || (CAST(substr(e.workspace_id, 4) AS INTEGER) * 2
                                       + CAST(e.conversation_seq > 2 AS INTEGER)) END AS ep
            FROM events AS e) AS e1) AS e2
"""

_PG_EVENTS = """
INSERT INTO events (seq, id, workspace_id, conversation_id, conversation_seq, event_type, body,
    created_at) OVERRIDING SYSTEM VALUE
SELECT k + 1, eid, 'ws_' || (c % {w}), cid, s, (ARRAY{types})[s],
       '{{"eventId":"' || eid || '","eventType":"' || (ARRAY{types})[s]
       || '","payload":{{"id":"' || cid || '","conversationStatus":"completed"}}}}', t
FROM (SELECT k, t, c, s,
             'evt_' || lpad(to_hex(t), 12, '0') || lpad(to_hex(k), 16, '0') AS eid,
             'conv_' || lpad(to_hex({base}::bigint), 12, '0') || lpad(to_hex(c), 16, '0') AS cid
      FROM (SELECT k, {base} + k * 10 AS t, (k / {q}) * {b} + k % {b} AS c,
                   CAST((k % {q}) / {b} + 1 AS INTEGER) AS s
            FROM generate_series(0::bigint, {n} - 1) AS k) AS g0) AS g
"""

_SQLITE_EVENTS = """
INSERT INTO events (seq, id, workspace_id, conversation_id, conversation_seq, event_type, body,
    created_at)
WITH RECURSIVE g(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM g WHERE k < {n} - 1)
SELECT k + 1, eid, 'ws_' || (c % {w}), cid, s, ty,
       '{{"eventId":"' || eid || '","eventType":"' || ty || '","payload":{{"id":"' || cid
       || '","conversationStatus":"completed"}}}}', t
FROM (SELECT k, t, c, s, printf('evt_%012x%016x', t, k) AS eid,
             printf('conv_%012x%016x', {base}, c) AS cid,
             CASE s WHEN 1 THEN '{t1}' WHEN 2 THEN '{t2}' WHEN 3 THEN '{t3}' ELSE '{t4}' END AS ty
      FROM (SELECT k, {base} + k * 10 AS t, (k / {q}) * {b} + k % {b} AS c,
                   (k % {q}) / {b} + 1 AS s FROM g))
"""


def _endpoints_sql(now: int) -> list[str]:
    rows = [f"INSERT INTO workspaces VALUES ('ws_{w}', 'bench', {now})" for w in range(WORKSPACES)]
    for w in range(WORKSPACES):
        for half in (0, 1):
            types = json.dumps(list(TYPES[2 * half : 2 * half + 2]))
            rows.append(
                "INSERT INTO endpoints (id, workspace_id, url, event_types, secret, created_at, "
                f"updated_at) VALUES ('ep_{2 * w + half}', 'ws_{w}', 'https://hooks.example/"
                f"{w}/{half}', '{types}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', {now}, {now})"
            )
    # A small endpoint: every event of ws_0 whose seq ends in 01 goes to it instead.
    rows.append(
        "INSERT INTO endpoints (id, workspace_id, url, secret, created_at, updated_at) VALUES "
        f"('ep_8', 'ws_0', 'https://hooks.example/small', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', "
        f"{now}, {now})"
    )
    return rows


def _fill_sql(template: str, shape: Shape) -> str:
    return template.format(
        n=shape.rows,
        now=shape.now,
        base=shape.base,
        new=NEW_BACKLOG,
        leased=LEASED,
        down=DOWN_WINDOW,
        w=WORKSPACES,
        b=BLOCK,
        q=4 * BLOCK,
        types="[" + ", ".join(f"'{t}'" for t in TYPES) + "]",
        t1=TYPES[0],
        t2=TYPES[1],
        t3=TYPES[2],
        t4=TYPES[3],
    )


def fill_postgres(dsn: str, shape: Shape) -> None:
    """Fill a migrated PostgreSQL database, its secondary structures rebuilt after the load."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in _endpoints_sql(shape.now):
            conn.execute(statement.encode())
        # Constraints (their indexes) and indexes of the two big tables, rebuilt after the load
        # from their own definitions so the schema stays exactly the migrations'.
        cons = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype "
            "FROM pg_constraint WHERE contype IN ('p', 'u', 'f') AND (conrelid IN "
            "('events'::regclass, 'deliveries'::regclass) OR confrelid = 'deliveries'::regclass)"
        ).fetchall()
        owned = {name for _, name, _, kind in cons if kind in "pu"}
        idx = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('events', 'deliveries')"
        ).fetchall()
        idx = [(name, sql) for name, sql in idx if name not in owned]
        for table, name, _, _kind in sorted(cons, key=lambda c: c[3] != "f"):
            conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}".encode())
        for name, _ in idx:
            conn.execute(f"DROP INDEX {name}".encode())
        conn.execute(b"ALTER TABLE events DISABLE TRIGGER events_fan_out")
        conn.execute(_fill_sql(_PG_EVENTS, shape).encode())
        conn.execute(_fill_sql(_DELIVERIES, shape).encode())
        conn.execute(b"ALTER TABLE events ENABLE TRIGGER events_fan_out")
        for table, name, definition, _kind in sorted(cons, key=lambda c: c[3] == "f"):
            conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}".encode())
        for _, sql in idx:
            conn.execute(sql.encode())
        for table, column in (("events", "seq"), ("deliveries", "id")):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                f"(SELECT max({column}) FROM {table}))".encode()
            )
        # What autovacuum gives a table in service: statistics and a visibility map.
        conn.execute(b"VACUUM (ANALYZE) events, deliveries, endpoints")


def fill_sqlite(path: Path, shape: Shape, analyze: bool) -> None:
    """Fill a migrated SQLite file, its secondary indexes and trigger rebuilt after the load."""
    conn = sqlite3.connect(path, isolation_level=None)
    # A throwaway load: no journal (a WAL would hold the whole load, then be copied back).
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    found = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN ('events', 'deliveries') "
        "AND type IN ('index', 'trigger') AND sql IS NOT NULL"
    ).fetchall()
    conn.execute("BEGIN")
    for kind, name, _ in found:
        conn.execute(f"DROP {kind} {name}")
    for statement in _endpoints_sql(shape.now):
        conn.execute(statement)
    conn.execute(_fill_sql(_SQLITE_EVENTS, shape))
    conn.execute(_fill_sql(_DELIVERIES, shape))
    for _, _, sql in found:
        conn.execute(sql)
    conn.execute("COMMIT")
    if analyze:
        conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


# -- the queries ----------------------------------------------------------------------------


class _Rollback(Exception):
    """Raised inside a write to undo it after timing (the claim must not change the data)."""

    def __init__(self, seconds: float, result: Any) -> None:
        super().__init__("rolled back")
        self.seconds, self.result = seconds, result


@dataclass(frozen=True)
class Case:
    """One query as the code runs it (its statements are traced to explain them)."""

    name: str
    run: Callable[[Any], Any]
    write: bool = False


def cases(shape: Shape) -> list[Case]:
    """The queries issue 7 names, with arguments that exist in a database of ``shape``."""
    now, mid = shape.now, shape.rows // 2
    ws, conv = shape.conversation(mid)
    ep = f"ep_{int(ws[3:]) * 2}"
    event = shape.event_id(mid)
    given = (
        ("event_type = ?", None),
        ("conversation_id = ?", conv),
        ("created_at >= ?", None),
        ("created_at < ?", None),
    )
    return [
        Case(
            "claim (limit 100)",
            lambda c: claim(c, "bench-claim", now, 60_000, 100),
            write=True,
        ),
        Case("dispatcher has_due check", lambda c: delivery_claims.has_due(c, now)),
        Case(
            "endpoint deliveries, page 1",
            lambda c: delivery_log.of_endpoint(c, ws, ep, limit=101),
        ),
        Case(
            "endpoint deliveries, deep page",
            lambda c: delivery_log.of_endpoint(c, ws, ep, limit=101, before=mid),
        ),
        Case(
            "small endpoint deliveries, page 1",
            lambda c: delivery_log.of_endpoint(c, "ws_0", "ep_8", limit=101),
        ),
        Case(
            "endpoint deliveries, status=failed",
            lambda c: delivery_log.of_endpoint(c, ws, ep, status="failed", limit=101),
        ),
        Case(
            "endpoint deliveries, status=delivering",
            lambda c: delivery_log.of_endpoint(c, ws, ep, status="delivering", limit=101),
        ),
        Case(
            "endpoint deliveries, status=pending",
            lambda c: delivery_log.of_endpoint(c, "ws_3", "ep_7", status="pending", limit=101),
        ),
        Case("events of a conversation", lambda c: event_log.list_page(c, ws, 0, 50, given)),
        Case("deliveries of an event", lambda c: delivery_log.of_event(c, ws, event)),
        Case("/metrics backlog", lambda c: delivery_log.backlog(c, now)),
    ]


# -- plans ----------------------------------------------------------------------------------


class _Tracer:
    """A connection wrapper that records every statement a store function runs."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.seen.append((sql, params))
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        return self.conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


class RecordingSQLite(SQLiteConnection):
    """A SQLite connection that can record its statements (a subclass rather than a wrapper:
    sqlite3's own methods run at C speed, and the timings are of those)."""

    seen: list[tuple[str, Any]] | None = None

    def execute(self, sql: str, params: Any = (), /) -> sqlite3.Cursor:
        if self.seen is not None:
            self.seen.append((sql, params))
        return super().execute(sql, params)


class _BenchSQLite(SQLiteDatabase):
    """convhook's SQLite engine on :class:`RecordingSQLite` connections."""

    def connect(self) -> RecordingSQLite:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=30,
            factory=RecordingSQLite,
        )
        # The same set-up as convhook.store.engine.sqlite.connect.
        conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("PRAGMA busy_timeout=30000")
        assert isinstance(conn, RecordingSQLite)
        return conn


def traced(conn: Any, case: Case) -> list[tuple[str, Any]]:
    """The statements ``case`` runs, with their arguments; what it wrote is undone."""
    conn.execute("SAVEPOINT trace")
    try:
        if isinstance(conn, RecordingSQLite):
            conn.seen = []
            try:
                case.run(conn)
            finally:
                seen, conn.seen = conn.seen, None
            return seen
        tracer = _Tracer(conn)
        case.run(tracer)
        return tracer.seen
    finally:
        conn.execute("ROLLBACK TO SAVEPOINT trace")
        conn.execute("RELEASE SAVEPOINT trace")


def plan_postgres(conn: Any, case: Case) -> str:
    """The plan in short: index or sequential scans, big sorts, buffers and server ms, over
    every statement the case runs (executed in order, so the claim's second statement sees
    what its first did)."""
    from convhook.store.engine.postgres import placeholders

    parts: list[str] = []
    buffers, server_ms = 0, 0.0
    for sql, params in traced(conn, case):
        cur = conn.raw.execute(
            b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + placeholders(sql),
            params if isinstance(params, dict) else tuple(params),
        )
        doc = cur.fetchone()[0][0]
        top = doc["Plan"]
        buffers += top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
        server_ms += doc["Execution Time"]
        parts.extend(_pg_nodes(top))
    return f"{'; '.join(dict.fromkeys(parts)) or '-'} [{buffers:,} buf, {server_ms:.1f} ms]"


def _pg_nodes(node: dict[str, Any]) -> Iterator[str]:
    kind = node["Node Type"]
    relation = node.get("Relation Name", "")
    index = node.get("Index Name", "")
    rows = node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
    big = relation in ("deliveries", "events") or index.startswith(("deliveries", "events"))
    if kind == "Seq Scan" and big:
        yield f"SEQ SCAN {relation}"
    elif "Index" in kind and big:
        short = {"Index Only Scan": "idx-only", "Bitmap Index Scan": "bitmap"}.get(kind, "idx")
        yield f"{short} {index} ({rows:,})"
    elif kind == "Sort" and rows > 1000:
        yield f"SORT {rows:,} rows"
    for child in node.get("Plans", []):
        yield from _pg_nodes(child)


def plan_sqlite(conn: sqlite3.Connection, case: Case) -> str:
    """The plan in short, from EXPLAIN QUERY PLAN of every statement the case runs."""
    parts: list[str] = []
    for sql, params in traced(conn, case):
        for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params):
            detail = re.sub(r"\s+", " ", row[3])
            if "json_each" in detail or "CONSTANT ROW" in detail or "endpoints" in detail:
                continue
            if re.search(r"\b(SCAN|SEARCH)\b|TEMP B-TREE", detail):
                parts.append(detail.replace("USING ", "").replace("COVERING INDEX", "cov"))
    return "; ".join(dict.fromkeys(parts)) or "-"


# -- measuring ------------------------------------------------------------------------------


async def time_case(db: Database, case: Case, runs: int, budget_s: float) -> float:
    """Median milliseconds of ``case`` over ``runs`` (fewer if it exceeds ``budget_s``)."""
    samples: list[float] = []
    started = time.perf_counter()
    for _ in range(runs):
        if case.write:

            def claim(conn: Any, run: Callable[[Any], Any] = case.run) -> None:
                t0 = time.perf_counter()
                result = run(conn)
                raise _Rollback(time.perf_counter() - t0, result)

            try:
                await db.write(claim)
            except _Rollback as done:
                samples.append(done.seconds * 1000)
        else:

            def read(conn: Any, run: Callable[[Any], Any] = case.run) -> float:
                t0 = time.perf_counter()
                run(conn)
                return time.perf_counter() - t0

            samples.append(await db.read(read) * 1000)
        if len(samples) >= 3 and time.perf_counter() - started > budget_s:
            break
    return statistics.median(samples)


async def measure(db: Database, shape: Shape, runs: int, plan: bool) -> dict[str, Any]:
    """Median ms of every case (and the subject's plans) on an open database."""
    out: dict[str, Any] = {}
    for case in cases(shape):
        ms = await time_case(db, case, runs, budget_s=8.0)
        summary = ""
        if plan:
            summarise = plan_sqlite if db.dialect.name == "sqlite" else plan_postgres
            try:
                await db.write(
                    lambda c, case=case, summarise=summarise: _explain_then_undo(c, case, summarise)
                )
            except _Rollback as done:
                summary = done.result
        out[case.name] = (ms, summary)
    return out


def _explain_then_undo(conn: Any, case: Case, summarise: Callable[[Any, Case], str]) -> str:
    # EXPLAIN ANALYZE executes the claim's writes: they are undone with the write.
    raise _Rollback(0.0, summarise(conn, case))


async def run_engine(engine: str, rows: int, small: int, runs: int, analyze: bool) -> None:
    now = time.time_ns() // 1_000_000
    shapes = {"subject": Shape(_round(rows), now), "baseline": Shape(_round(small), now)}
    results: dict[str, dict[str, Any]] = {}
    with _Databases() as stack:
        for label, shape in shapes.items():
            t0 = time.perf_counter()
            db = await stack(engine, label, shape, analyze)
            print(
                f"{engine}: filled {label} ({shape.rows:,} deliveries and events) in "
                f"{time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
            )
            try:
                results[label] = await measure(db, shape, runs, plan=True)
            finally:
                await db.close()
    _print_table(engine, shapes, results)


def _round(rows: int) -> int:
    step = 4 * BLOCK
    return max(step * 13, rows // step * step)


class _Databases:
    """Opens filled databases for one engine and removes them (and the server) at exit."""

    def __enter__(self) -> Callable[..., Any]:
        self._tmp = tempfile.TemporaryDirectory(prefix="convhook-bench-")
        self._server: Any = None
        return self.open

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()
        self._tmp.cleanup()

    async def open(self, engine: str, label: str, shape: Shape, analyze: bool) -> Database:
        if engine == "sqlite":
            path = Path(self._tmp.name) / f"{label}.db"
            migrations = load("sqlite", "producer")
            db: Database = _BenchSQLite(path, migrations, readers=1)
            await db.open()
            await db.close()
            await asyncio.to_thread(fill_sqlite, path, shape, analyze)
            db = _BenchSQLite(path, migrations, readers=1)
        else:
            from tests.support.postgres import TemporaryPostgres

            from convhook.store.engine.postgres import PostgresDatabase

            if self._server is None:
                self._server = TemporaryPostgres(durable=True, settings=PG_SETTINGS).start()
            dsn = self._server.create_database(label)
            migrations = load("postgres", "producer")
            db = PostgresDatabase(dsn, migrations, auto_upgrade=True)
            await db.open()
            await db.close()
            await asyncio.to_thread(fill_postgres, dsn, shape)
            db = PostgresDatabase(dsn, migrations, readers=1)
        await db.open()
        return db


# A server sized for a 10 M row table on a small machine; work_mem stays at its default.
PG_SETTINGS = {
    "shared_buffers": "1GB",
    "maintenance_work_mem": "1GB",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "30min",
    "max_parallel_maintenance_workers": "2",
}


def _print_table(engine: str, shapes: dict[str, Shape], results: dict[str, dict[str, Any]]) -> None:
    big, small = shapes["subject"].rows, shapes["baseline"].rows
    print(f"\n{engine}: {big:,} rows (subject) vs {small:,} rows (baseline), median ms")
    header = f"{'query':<38} {'subject':>9} {'baseline':>9} {'ratio':>7}  plan (subject)"
    print(header)
    print("-" * len(header))
    for name, (ms, plan) in results["subject"].items():
        base = results["baseline"][name][0]
        ratio = ms / base if base > 0 else float("inf")
        print(f"{name:<38} {ms:>9.2f} {base:>9.2f} {ratio:>6.1f}x  {plan}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="deliveries (PostgreSQL)")
    parser.add_argument("--sqlite-rows", type=int, help="deliveries on SQLite (default: --rows)")
    parser.add_argument("--small", type=int, default=100_000, help="baseline deliveries")
    parser.add_argument("--engine", default="postgres", choices=["postgres", "sqlite", "both"])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--sqlite-analyze", action="store_true", help="give SQLite planner statistics"
    )
    args = parser.parse_args()
    engines = ["postgres", "sqlite"] if args.engine == "both" else [args.engine]
    for engine in engines:
        rows = args.sqlite_rows if engine == "sqlite" and args.sqlite_rows else args.rows
        asyncio.run(run_engine(engine, rows, args.small, args.runs, args.sqlite_analyze))


if __name__ == "__main__":
    main()
