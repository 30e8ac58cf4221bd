"""Scale-out delivery on PostgreSQL with real processes: several dispatchers share one
database, one is SIGKILLed midway; the server restarts during delivery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from aiohttp import web

from convhook.ids import new_id
from convhook.samples import sample_event
from convhook.signing import Secret
from convhook.store import open_database
from convhook.store.delivery import endpoints as endpoint_store
from convhook.store.engine.postgres import PgConnection
from tests.support.delivery import LIFECYCLE
from tests.support.postgres import TemporaryPostgres
from tests.support.servers import CLIProcess, free_port

pytestmark = pytest.mark.slow


class Hook:
    """A bare aiohttp receiver that only notes each request's webhook-id, in arrival order."""

    def __init__(self, delay: float = 0.0) -> None:
        self.ids: list[str] = []
        self.delay = delay

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.ids.append(request.headers["webhook-id"])
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(text="Webhook received successfully")


@contextlib.asynccontextmanager
async def running(hook: Hook) -> AsyncIterator[str]:
    """Serve ``hook`` on a loopback port; yield its URL."""
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


class Outbox:
    """Events written straight into the outbox (the fan-out trigger queues their deliveries)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.workspace = new_id("ws")
        self.order: dict[str, tuple[str, int]] = {}  # event id -> (conversation, seq)
        self._templates = [sample_event(t).to_json().decode() for t in LIFECYCLE]

    def _conn(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True)

    def setup(self, hook_url: str, max_in_flight: int) -> None:
        now = int(time.time() * 1000)
        with self._conn() as raw:
            conn = PgConnection(raw)
            conn.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES (?, 't', ?)",
                (self.workspace, now),
            )
            endpoint_store.create(
                conn,
                endpoint_id=new_id("ep"),
                workspace_id=self.workspace,
                url=hook_url,
                secret=str(Secret.generate()),
                now=now,
                max_in_flight=max_in_flight,
            )

    def record(self, conversations: range) -> None:
        """Four lifecycle events for each conversation, in one transaction."""
        rows = []
        now = int(time.time() * 1000)
        for n in conversations:
            conv = f"conv_{n}"
            for seq, event_type in enumerate(LIFECYCLE, 1):
                event_id = new_id("evt")
                template = self._templates[seq - 1]
                body = json.dumps({**json.loads(template), "eventId": event_id})
                self.order[event_id] = (conv, seq)
                rows.append((event_id, self.workspace, conv, seq, event_type, body, now))
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, "
                "event_type, body, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                rows,
            )

    def statuses(self) -> dict[str, int]:
        with self._conn() as conn:
            rows = conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status")
            return {str(r[0]): int(str(r[1])) for r in rows}

    def check_order(self, arrivals: list[str]) -> None:
        """Each event's first arrival comes after its conversation's earlier events arrived."""
        seen: dict[str, int] = {}
        for event_id in arrivals:
            conv, seq = self.order[event_id]
            last = seen.get(conv, 0)
            if seq <= last:
                continue  # a duplicate of an event already delivered
            assert seq == last + 1, f"{conv}: event {seq} arrived before event {last + 1}"
            seen[conv] = seq


async def _upgraded(url: str) -> None:
    async with open_database(url, "producer", auto_upgrade=True):
        pass


def _dispatcher(url: str, tmp: Path, *extra: str) -> CLIProcess:
    return CLIProcess(
        [
            "dispatcher",
            "--db",
            url,
            "--allow-private-targets",
            "--log-level",
            "warning",
            "--lease",
            "3",
            "--timeout",
            "2",
            "--poll-interval",
            "1",
            *extra,
        ],
        cwd=tmp,
    )


async def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout} s")
        await asyncio.sleep(0.1)


@contextlib.contextmanager
def _all_stopped(procs: list[CLIProcess]) -> Iterator[list[CLIProcess]]:
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


async def test_three_dispatchers_one_killed_deliver_20000_in_order(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three dispatcher processes on one PostgreSQL deliver 20,000 events (5,000
    conversations) while one is SIGKILLed midway: every event arrives, each conversation's
    first arrivals are in order, every delivery ends delivered; duplicates are counted."""
    await _upgraded(pg_url)
    hook = Hook()
    outbox = Outbox(pg_url)
    async with running(hook) as url:
        outbox.setup(url, max_in_flight=64)
        await asyncio.to_thread(outbox.record, range(2500))
        started = time.monotonic()
        procs = [_dispatcher(pg_url, tmp_path) for _ in range(3)]
        with _all_stopped(procs):
            # The second half arrives while they run: NOTIFY wakes them.
            await asyncio.to_thread(outbox.record, range(2500, 5000))
            await _until(lambda: len(hook.ids) >= 7000, 60, "a third delivered")
            procs[0].kill()
            killed_at = len(hook.ids)
            await _until(lambda: len(set(hook.ids)) >= 20_000, 90, "all delivered")
            await _until(
                lambda: outbox.statuses() == {"delivered": 20_000}, 20, "all recorded delivered"
            )
        elapsed = time.monotonic() - started
    assert set(hook.ids) == set(outbox.order)
    outbox.check_order(hook.ids)
    duplicates = len(hook.ids) - len(set(hook.ids))
    with capsys.disabled():
        print(
            f"\n20,000 events, 3 dispatchers, one SIGKILLed after {killed_at} arrivals: "
            f"{elapsed:.1f} s, {duplicates} duplicates"
        )
    assert duplicates <= 3 * 128  # at most what the killed dispatcher held leased


async def test_postgres_restart_during_delivery(tmp_path: Path) -> None:
    """The PostgreSQL server restarts while a dispatcher delivers; it reconnects and every
    event (including those recorded after the restart) is delivered and recorded."""
    with TemporaryPostgres() as server:
        url = server.create_database("restart")
        await _upgraded(url)
        hook = Hook(delay=0.01)
        outbox = Outbox(url)
        async with running(hook) as hook_url:
            outbox.setup(hook_url, max_in_flight=8)
            await asyncio.to_thread(outbox.record, range(300))
            with _dispatcher(url, tmp_path) as proc:
                await _until(lambda: len(hook.ids) >= 200, 60, "deliveries under way")
                await asyncio.to_thread(server.restart)
                await asyncio.to_thread(outbox.record, range(300, 400))
                await _until(lambda: len(set(hook.ids)) >= 1600, 60, "all delivered")
                await _until(lambda: outbox.statuses() == {"delivered": 1600}, 30, "all recorded")
                assert proc.proc.poll() is None, proc.stderr
        assert set(hook.ids) == set(outbox.order)
        outbox.check_order(hook.ids)
        assert "claim_failed" in proc.stderr or "record_failed" in proc.stderr


async def test_dispatcher_metrics_port(pg_url: str, tmp_path: Path) -> None:
    """``convhook dispatcher --metrics-port`` serves its attempt counters for scraping."""
    import aiohttp

    await _upgraded(pg_url)
    hook = Hook()
    outbox = Outbox(pg_url)
    port = free_port()
    async with running(hook) as url:
        outbox.setup(url, max_in_flight=4)
        await asyncio.to_thread(outbox.record, range(2))
        with _dispatcher(pg_url, tmp_path, "--metrics-port", str(port)):
            await _until(lambda: len(set(hook.ids)) >= 8, 30, "delivered")
            await _until(lambda: outbox.statuses() == {"delivered": 8}, 10, "recorded")
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/metrics") as r,
            ):
                text = await r.text()
    assert 'convhook_delivery_attempts_total{outcome="delivered"} 8.0' in text
