"""The watchdog in real processes: `convhook serve` ends a conversation left after join with
one conversation.completed (endReason timeout) that a real receiver gets, a racing client end
adds no second one, two processes on one database act through one lease, and a malformed
limit is refused before anything starts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from convhook.lifecycle import Action
from convhook.outbox import Outbox
from convhook.store import open_database
from convhook.store.producer import ProducerStore
from tests.support.servers import CLIProcess, cli_process, eventually, free_port

KEY = re.compile(r"chk_[A-Za-z0-9_-]+")
SHORT = ["--watchdog-dialing", "1s", "--watchdog-active", "1s", "--watchdog-left", "1s"]
LOGS = ["--log-format", "json", "--log-level", "info"]


class Hook:
    """A loopback receiver noting each delivered event's type and conversation."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.events.append(json.loads(await request.read()))
        return web.Response(text="ok")

    def of(self, conv: str) -> list[str]:
        return [e["eventType"] for e in self.events if e["payload"]["id"] == conv]


@contextlib.asynccontextmanager
async def receiving(hook: Hook) -> AsyncIterator[str]:
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


async def upgraded(url: str) -> None:
    """Bring a PostgreSQL database to the current schema (serve only checks it)."""
    if url.startswith("postgresql://"):
        async with open_database(url, "producer", auto_upgrade=True):
            pass


def timed_out(proc: CLIProcess) -> list[dict[str, Any]]:
    """The process's conversation_timed_out log records."""
    records = []
    for line in proc.stderr.splitlines():
        if '"conversation_timed_out"' in line:
            records.append(json.loads(line))
    return records


@contextlib.contextmanager
def serving(url: str, tmp: Path, *extra: str) -> Iterator[tuple[CLIProcess, str, str]]:
    """`convhook serve` on ``url`` with one-second limits; yields it, its API base and key."""
    port = free_port()
    args = ["serve", "--port", str(port), "--db", url, "--allow-private-targets", *SHORT]
    with cli_process([*args, *LOGS, *extra], cwd=tmp, port=port) as proc:
        key = KEY.search(proc.stderr)
        assert key, proc.stderr
        yield proc, f"http://127.0.0.1:{port}/api/v2", key[0]


async def test_left_after_join_gets_one_timeout(database_url: str, tmp_path: Path) -> None:
    """A conversation joined and left alone gets exactly one conversation.completed with
    endReason timeout, seen in the events API and delivered to a loopback receiver; one
    dialing too long fails with endReason timeout; one only created is left alone."""
    await upgraded(database_url)
    hook = Hook()
    async with receiving(hook) as hook_url:
        with serving(database_url, tmp_path) as (proc, base, key):
            async with aiohttp.ClientSession(headers={"x-api-key": key}) as http:
                async with http.post(f"{base}/endpoints", json={"url": hook_url}) as r:
                    assert r.status == 201, await r.text()
                convs = []
                for _ in range(3):
                    async with http.post(f"{base}/conversations", json={"agentId": "a"}) as r:
                        convs.append((await r.json())["id"])
                joined, dialing, created = convs
                for conv, action in ((joined, "join"), (dialing, "dial")):
                    async with http.post(f"{base}/conversations/{conv}/{action}") as r:
                        assert r.status == 200, await r.text()

                await eventually(lambda: len(hook.of(joined)) == 2 and hook.of(dialing), 20)
                # A few more sweeps: nothing is added.
                await asyncio.sleep(1.5)
                async with http.get(f"{base}/events", params={"conversationId": joined}) as r:
                    recorded = (await r.json())["data"]
                async with http.get(f"{base}/conversations/{dialing}") as r:
                    failed = await r.json()
                async with http.get(f"{base}/conversations/{created}") as r:
                    untouched = await r.json()
    assert [e["eventType"] for e in recorded] == [
        "conversation.userJoined",
        "conversation.completed",
    ]
    assert recorded[1]["payload"]["endReason"] == "timeout"
    assert recorded[1]["payload"]["conversationStatus"] == "completed"
    assert hook.of(joined) == ["conversation.userJoined", "conversation.completed"]
    delivered = next(e for e in hook.events if e["eventId"] == recorded[1]["eventId"])
    assert delivered["payload"]["endReason"] == "timeout"
    assert hook.of(dialing) == ["conversation.completed"]
    assert (failed["conversationStatus"], failed["endReason"]) == ("failed", "timeout")
    assert untouched["conversationStatus"] == "created"
    assert hook.of(created) == []
    logged = timed_out(proc)
    assert sorted(r["conversation_id"] for r in logged) == sorted([joined, dialing])


async def test_racing_client_end_adds_no_second_terminal_event(
    database_url: str, tmp_path: Path
) -> None:
    """Client ends sent around the moment the watchdog acts leave every conversation with
    exactly one conversation.completed; each end is answered 200 (it won) or 409 (too late)."""
    await upgraded(database_url)
    with serving(database_url, tmp_path, "--max-active", "1000") as (_, base, key):
        async with aiohttp.ClientSession(headers={"x-api-key": key}) as http:
            body = {"conversations": [{"agentId": "a"}] * 30}
            async with http.post(f"{base}/conversations", json=body) as r:
                assert r.status == 201, await r.text()
                convs = [item["id"] for item in (await r.json())["results"]]

            async def post(conv: str, action: str, delay: float = 0.0) -> int:
                await asyncio.sleep(delay)
                async with http.post(f"{base}/conversations/{conv}/{action}") as r:
                    return r.status

            assert set(await asyncio.gather(*(post(c, "join") for c in convs))) == {200}
            # Spread over two seconds around the limit: some before the watchdog, some after.
            ends = await asyncio.gather(
                *(post(c, "end", 0.3 + n * 0.06) for n, c in enumerate(convs))
            )
            await asyncio.sleep(1.5)
            completed: Counter[str] = Counter()
            async with http.get(
                f"{base}/events", params={"eventType": "conversation.completed", "limit": 200}
            ) as r:
                for event in (await r.json())["data"]:
                    completed[event["payload"]["id"]] += 1
    assert set(ends) <= {200, 409}
    # Some ends came before the watchdog and some after: the two really raced.
    assert 200 in ends, ends
    assert 409 in ends, ends
    assert completed == Counter(dict.fromkeys(convs, 1))


def _dispatcher(url: str, tmp: Path) -> CLIProcess:
    return CLIProcess(
        ["dispatcher", "--db", url, "--allow-private-targets", *SHORT, *LOGS], cwd=tmp
    )


async def test_two_processes_one_watchdog(database_url: str, tmp_path: Path) -> None:
    """Two dispatcher processes on one database: only the lease holder times conversations
    out, each exactly once; when it is killed the other takes over after the lease expires."""
    await upgraded(database_url)
    async with ProducerStore.at(database_url, auto_upgrade=True) as store:
        workspace, _ = await store.create_workspace("w")
        ws = workspace.id
        outbox = Outbox(store, max_active=1000)

        async def joined(count: int) -> list[str]:
            created = await outbox.create(ws, [({"agentId": "a"}, False)] * count)
            ids = [c.document["id"] for c in created if c.document is not None]
            await asyncio.gather(*(outbox.transition(ws, c, Action.JOIN, {}) for c in ids))
            return ids

        async def completed() -> Counter[str]:
            page = await store.list_events(ws, event_type="conversation.completed", limit=500)
            return Counter(json.loads(i)["payload"]["id"] for i in page.items)

        procs = [_dispatcher(database_url, tmp_path) for _ in range(2)]
        try:
            first = await joined(20)

            async def all_ended(ids: list[str]) -> bool:
                done = await completed()
                return all(done[c] for c in ids)

            await eventually(lambda: all_ended(first), 30)
            await asyncio.sleep(1)  # more sweeps by both
            acted = [p for p in procs if timed_out(p)]
            assert len(acted) == 1, [p.stderr for p in procs]
            holder = acted[0]
            assert len(timed_out(holder)) == 20
            # The holder crashes without giving the lease up: the other waits for it to expire.
            holder.kill()
            other = next(p for p in procs if p is not holder)
            second = await joined(5)
            await eventually(lambda: all_ended(second), 30)
            # The log record follows the commit (and is written off the event loop).
            await eventually(lambda: len(timed_out(other)) >= len(second), 10)
            assert sorted(r["conversation_id"] for r in timed_out(other)) == sorted(second)
            assert await completed() == Counter(dict.fromkeys(first + second, 1))
        finally:
            for p in procs:
                p.stop()


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("serve", "--watchdog-active", "5x"),
        ("serve", "--watchdog-created", "1d"),
        ("dispatcher", "--watchdog-left", "ten"),
        ("dispatcher", "--watchdog-dialing", "1.5m"),
    ],
)
def test_bad_duration_exits_2_naming_the_option(
    command: str, option: str, value: str, tmp_path: Path
) -> None:
    """A limit that is not 90s/2m/4h/0 stops the command with exit status 2 and an error
    naming the option, before any database is created."""
    done = subprocess.run(
        [sys.executable, "-m", "convhook", command, "--db", str(tmp_path / "c.db"), option, value],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert option in done.stderr
    assert repr(value) in done.stderr
    assert not (tmp_path / "c.db").exists()


def test_bad_duration_from_the_environment(tmp_path: Path) -> None:
    """CONVHOOK_WATCHDOG_ACTIVE is read like its option and refused the same way."""
    env = {"CONVHOOK_WATCHDOG_ACTIVE": "forever", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "convhook", "serve", "--db", str(tmp_path / "c.db")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    assert "--watchdog-active" in done.stderr


def test_help_names_the_variables() -> None:
    """Both commands show each watchdog option with its CONVHOOK_ variable."""
    for command in ("serve", "dispatcher"):
        done = subprocess.run(
            [sys.executable, "-m", "convhook", command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        )
        for phase in ("created", "dialing", "active", "left"):
            assert f"--watchdog-{phase}" in done.stdout
            assert f"CONVHOOK_WATCHDOG_{phase.upper()}" in done.stdout
