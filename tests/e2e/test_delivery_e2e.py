"""Delivery with real processes: ``convhook serve``, ``convhook dispatcher``, ``convhook listen``."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.delivery import LIFECYCLE, Proc, Receiver, Reply, loopback_name, record_event
from tests.support.servers import free_port, serve_app

pytestmark = pytest.mark.slow

KEY = re.compile(r"chk_[A-Za-z0-9_-]+")


@functools.cache
def _serve_help() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "convhook", "serve", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    return result.stdout


def _serve_allows_private() -> bool:
    return "--allow-private-targets" in _serve_help()


class Stack:
    """A running ``convhook serve`` with its API key and database path."""

    def __init__(self, tmp: Path, serve: Proc, port: int) -> None:
        self.tmp = tmp
        self.serve = serve
        self.base = f"http://127.0.0.1:{port}"
        self.db = tmp / "producer.db"
        match = KEY.search(serve.stderr)
        assert match, serve.stderr
        self.key = match[0]
        self.private_flag = _serve_allows_private()

    def target(self, port: int, path: str = "/webhook") -> str:
        """A receiver URL the API accepts: 127.0.0.1 if serve allows it, else a loopback name."""
        if self.private_flag:
            return f"http://127.0.0.1:{port}{path}"
        name = loopback_name()
        if name is None:
            pytest.skip("serve lacks --allow-private-targets and no host name maps to loopback")
        return f"http://{name}:{port}{path}"

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession(headers={"x-api-key": self.key}) as http,
            http.request(method, self.base + path, json=body) as r,
        ):
            assert r.status < 300, (r.status, await r.text())
            return json.loads(await r.read()) if r.status != 204 else None

    def dispatcher(self, *extra: str) -> Proc:
        return Proc(
            [
                "dispatcher",
                "--db",
                str(self.db),
                "--synchronous",
                "NORMAL",
                "--poll-interval",
                "0.2",
                *extra,
            ],
            self.tmp,
        )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """``convhook serve`` on a fresh SQLite file."""
    port = free_port()
    args = [
        "serve",
        "--port",
        str(port),
        "--db",
        str(tmp_path / "producer.db"),
        "--synchronous",
        "NORMAL",
    ]
    if _serve_allows_private():
        args.append("--allow-private-targets")
    if "--no-dispatch" in _serve_help():
        # The dispatcher under test is the separate `convhook dispatcher` process.
        args.append("--no-dispatch")
    with Proc(args, tmp_path, port=port) as serve:
        yield Stack(tmp_path, serve, port)


def _inbox(path: Path) -> list[tuple[str, str, bytes]]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        try:
            rows = conn.execute(
                "SELECT event_id, event_type, body FROM convhook_inbox ORDER BY received_at"
            ).fetchall()
        except sqlite3.OperationalError:
            return []
    conn.close()
    return [(r[0], r[1], bytes(r[2])) for r in rows]


async def _until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_lifecycle_reaches_convhook_listen(stack: Stack) -> None:
    """Customer, conversation, endpoint, four transitions: listen gets four signed events in order."""
    listen_port = free_port()
    endpoint = await stack.call("POST", "/api/v2/endpoints", {"url": stack.target(listen_port)})
    inbox = stack.tmp / "inbox.db"
    with (
        Proc(
            [
                "listen",
                "--port",
                str(listen_port),
                "--secret",
                endpoint["secret"],
                "--db",
                str(inbox),
                "--quiet",
            ],
            stack.tmp,
            port=listen_port,
        ),
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
        got = await _until(lambda: len(_inbox(inbox)) >= 4 and _inbox(inbox))
    assert [t for _, t, _ in got] == list(LIFECYCLE)
    for event_id, _, body in got:
        async with (
            aiohttp.ClientSession(headers={"x-api-key": stack.key}) as http,
            http.get(f"{stack.base}/api/v2/events/{event_id}") as r,
        ):
            assert await r.read() == body  # byte for byte the API's view
    log = await stack.call("GET", f"/api/v2/events/{got[0][0]}/deliveries")
    assert log["data"][0]["status"] == "delivered"
    assert log["data"][0]["attemptLog"][0]["statusCode"] == 200


async def test_dispatcher_sigkill_mid_batch_loses_nothing(stack: Stack) -> None:
    """SIGKILL during a batch, restart: every event arrives at least once, none is lost."""
    receiver = Receiver()
    receiver.then(*[Reply(delay=0.02) for _ in range(10_000)])
    count = 300
    async with serve_app(receiver) as base:
        port = int(base.rsplit(":", 1)[1])
        await stack.call(
            "POST", "/api/v2/endpoints", {"url": stack.target(port), "maxInFlight": 20}
        )
        with sqlite3.connect(stack.db, isolation_level=None) as conn:
            [workspace] = conn.execute("SELECT id FROM workspaces").fetchone()
            conn.execute("BEGIN")
            ids = {
                record_event(
                    conn, workspace, f"conv_{i}", 1, LIFECYCLE[0], int(time.time() * 1000)
                )[0]
                for i in range(count)
            }
            conn.execute("COMMIT")
        conn.close()
        first = stack.dispatcher("--allow-private-targets", "--lease", "2", "--timeout", "1")
        await receiver.wait_for(40, timeout=20)
        first.kill()
        with stack.dispatcher("--allow-private-targets", "--lease", "2", "--timeout", "1"):
            await _until(
                lambda: ids <= {r.headers["webhook-id"] for r in receiver.received}, timeout=40
            )
            statuses = await _until(lambda: _statuses(stack.db) == {"delivered": count} and 1)
    assert statuses
    assert len(receiver.received) >= count


def _statuses(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        found = dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status"))
    conn.close()
    return found


async def test_dns_name_to_loopback_refused_without_flag(stack: Stack) -> None:
    """A host name resolving to 127.0.0.1 passes creation but the dispatcher never dials it."""
    name = loopback_name()
    if name is None:
        pytest.skip("no host name other than localhost maps to loopback here")
    receiver = Receiver()
    async with serve_app(receiver) as base:
        port = base.rsplit(":", 1)[1]
        endpoint = await stack.call("POST", "/api/v2/endpoints", {"url": f"http://{name}:{port}/"})
        test = await stack.call("POST", f"/api/v2/endpoints/{endpoint['id']}/test", {})
        with stack.dispatcher():
            delivery = await _until(lambda: _last_error(stack.db, test["deliveryId"]))
    assert receiver.received == []
    assert "refusing to connect" in delivery
    assert "loopback" in delivery


def _last_error(path: Path, delivery_id: int) -> str | None:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT last_error FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
    conn.close()
    return row[0] if row else None
