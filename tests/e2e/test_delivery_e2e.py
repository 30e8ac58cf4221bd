"""Delivery with real processes: ``convhook serve``, ``convhook dispatcher``, ``convhook listen``,
on SQLite and on PostgreSQL (the producer's and the receiver's databases on the same engine)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from convhook.store import open_database
from convhook.store.delivery import log as delivery_log
from convhook.store.inbox import InboxEntry
from convhook.store.inbox.store import open_inbox
from tests.support.delivery import LIFECYCLE, Receiver, Reply, loopback_name, record_event
from tests.support.postgres import TemporaryPostgres
from tests.support.servers import CLIProcess, cli_process, free_port, process_alive, serve_app

pytestmark = pytest.mark.slow

KEY = re.compile(r"chk_[A-Za-z0-9_-]+")
T = TypeVar("T")


def _convhook(*args: str, cwd: Path) -> None:
    """Run a one-shot ``convhook`` command and insist it succeeds."""
    done = subprocess.run(
        [sys.executable, "-m", "convhook", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


class Stack:
    """A running ``convhook serve`` (without its in-process dispatcher) and its database."""

    def __init__(self, tmp: Path, db: str, serve: CLIProcess, port: int) -> None:
        self.tmp = tmp
        self.db = db
        self.serve = serve
        self.base = f"http://127.0.0.1:{port}"
        match = KEY.search(serve.stderr)
        assert match, serve.stderr
        self.key = match[0]

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One authenticated API call; the decoded answer (an error status fails the test)."""
        async with (
            aiohttp.ClientSession(headers={"x-api-key": self.key}) as http,
            http.request(method, self.base + path, json=body) as r,
        ):
            assert r.status < 300, (r.status, await r.text())
            return await r.json() if r.status != 204 else None

    async def raw(self, path: str) -> bytes:
        """The exact bytes of one authenticated GET."""
        async with (
            aiohttp.ClientSession(headers={"x-api-key": self.key}) as http,
            http.get(self.base + path) as r,
        ):
            assert r.status == 200, (r.status, await r.text())
            return await r.read()

    async def store(self, fn: Callable[[Any], T], *, write: bool = False) -> T:
        """Run ``fn`` on the producer's database through the store (either engine)."""
        async with open_database(self.db, "producer") as db:
            return await (db.write(fn) if write else db.read(fn))

    async def statuses(self) -> dict[str, int]:
        """Deliveries by status."""
        now = int(time.time() * 1000)
        return (await self.store(lambda c: delivery_log.backlog(c, now))).by_status

    def dispatcher(self, *extra: str) -> CLIProcess:
        """A ``convhook dispatcher`` process on the same database (stop it with ``with``)."""
        args = ["dispatcher", "--db", self.db, "--synchronous", "NORMAL"]
        return CLIProcess([*args, "--poll-interval", "0.2", *extra], cwd=self.tmp)


@pytest.fixture
def inbox_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The receiver's database on the producer's engine: a SQLite file, or a separate
    PostgreSQL database whose inbox schema `convhook db upgrade` made."""
    if not database_url.startswith("postgresql"):
        return str(tmp_path / "inbox.db")
    server: TemporaryPostgres = request.getfixturevalue("pg_server")
    url = server.create_database(f"i_{uuid.uuid4().hex[:12]}")
    _convhook("db", "upgrade", "--db", url, "--component", "inbox", cwd=tmp_path)
    return url


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """``convhook serve --no-dispatch`` on a fresh database of either engine (the dispatcher
    under test is a separate ``convhook dispatcher`` process)."""
    if database_url.startswith("postgresql"):
        _convhook("db", "upgrade", "--db", database_url, "--component", "producer", cwd=tmp_path)
    port = free_port()
    args = ["serve", "--port", str(port), "--db", database_url, "--synchronous", "NORMAL"]
    args += ["--allow-private-targets", "--no-dispatch"]
    with cli_process(args, cwd=tmp_path, port=port) as serve:
        yield Stack(tmp_path, database_url, serve, port)


async def _inbox(url: str) -> list[InboxEntry]:
    """Everything the receiver stored, in arrival order, read through the inbox store."""
    async with open_inbox(url) as inbox:
        return list(reversed(await inbox.recent(limit=1000)))


async def _until(check: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in time (last: {value!r})")
        await asyncio.sleep(0.1)


async def test_lifecycle_reaches_convhook_listen(stack: Stack, inbox_url: str) -> None:
    """Customer, conversation, endpoint, four transitions: listen stores four signed events in
    lifecycle order, each byte for byte the API's view of it, each delivery logged as a 200."""
    listen_port = free_port()
    url = f"http://127.0.0.1:{listen_port}/webhook"
    endpoint = await stack.call("POST", "/api/v2/endpoints", {"url": url})
    listen = ["listen", "--port", str(listen_port), "--secret", endpoint["secret"]]
    with (
        cli_process([*listen, "--db", inbox_url, "--quiet"], cwd=stack.tmp, port=listen_port),
        stack.dispatcher("--allow-private-targets"),
    ):
        customer = await stack.call(
            "POST", "/api/v2/customers", {"name": "Jane Doe", "phoneNumber": "+14155550123"}
        )
        conv = await stack.call(
            "POST", "/api/v2/conversations", {"agentId": "agent_1", "customerId": customer["id"]}
        )
        for action in ("join", "leave", "end", "analysis"):
            await stack.call("POST", f"/api/v2/conversations/{conv['id']}/{action}", {})

        async def four() -> list[InboxEntry]:
            got = await _inbox(inbox_url)
            return got if len(got) >= 4 else []

        got = await _until(four)
    assert [e.event_type for e in got] == list(LIFECYCLE)
    for entry in got:
        # listen verified the signature before storing; the headers it kept say so too.
        assert dict(entry.headers)["webhook-id"] == entry.event_id
        assert entry.body == await stack.raw(f"/api/v2/events/{entry.event_id}")
    log = await stack.call("GET", f"/api/v2/events/{got[0].event_id}/deliveries")
    assert log["data"][0]["status"] == "delivered"
    assert log["data"][0]["attemptLog"][0]["statusCode"] == 200


async def test_dispatcher_sigkill_mid_batch_loses_nothing(stack: Stack) -> None:
    """SIGKILL during a batch, restart: every event arrives at least once, none is lost, and
    every delivery ends recorded as delivered."""
    receiver = Receiver()
    receiver.then(*[Reply(delay=0.02) for _ in range(10_000)])
    count = 300
    async with serve_app(receiver) as base:
        await stack.call("POST", "/api/v2/endpoints", {"url": base + "/webhook", "maxInFlight": 20})

        def fill(conn: Any) -> set[str]:
            [workspace] = conn.execute("SELECT id FROM workspaces").fetchone()
            now = int(time.time() * 1000)
            return {
                record_event(conn, workspace, f"conv_{i}", 1, LIFECYCLE[0], now)[0]
                for i in range(count)
            }

        ids = await stack.store(fill, write=True)
        flags = ("--allow-private-targets", "--lease", "2", "--timeout", "1")
        with stack.dispatcher(*flags) as first:
            await receiver.wait_for(40, timeout=20)
            writers = _children(first.proc.pid)
            # The claims and records run in a child process, on either engine.
            assert len(writers) == 1
            first.kill()

            async def writers_gone() -> bool:
                # Not in the dispatcher's process group: each must notice the death itself.
                return not any(process_alive(pid) for pid in writers)

            await _until(writers_gone, timeout=10)
        arrived = len(receiver.received)
        assert arrived < count, "the first dispatcher finished before it was killed"
        with stack.dispatcher(*flags):

            async def all_arrived() -> bool:
                return ids <= {r.headers["webhook-id"] for r in receiver.received}

            await _until(all_arrived, timeout=40)

            async def all_recorded() -> bool:
                return await stack.statuses() == {"delivered": count}

            await _until(all_recorded)
    assert len(receiver.received) >= count


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_dns_name_to_loopback_refused_without_flag(stack: Stack) -> None:
    """A host name resolving to 127.0.0.1 passes creation but the dispatcher never dials it:
    the attempt is logged as refused, naming loopback."""
    name = loopback_name()
    if name is None:
        pytest.skip("no host name other than localhost maps to loopback here")
    receiver = Receiver()
    async with serve_app(receiver) as base:
        port = base.rsplit(":", 1)[1]
        endpoint = await stack.call("POST", "/api/v2/endpoints", {"url": f"http://{name}:{port}/"})
        test = await stack.call("POST", f"/api/v2/endpoints/{endpoint['id']}/test", {})
        with stack.dispatcher():

            async def refused() -> str | None:
                delivery = await stack.call("GET", f"/api/v2/deliveries/{test['deliveryId']}")
                error: str | None = delivery["lastError"]
                return error

            error = await _until(refused)
    assert receiver.received == []
    assert error is not None
    assert "refusing to connect" in error
    assert "loopback" in error
