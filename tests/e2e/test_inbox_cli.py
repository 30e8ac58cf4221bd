"""``convhook inbox`` as an operator uses it: a list that fits the terminal with whole ids,
``show`` in JSON spellings, and a forwarding replay that updates the status it reports."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from convhook.store.inbox import HandlerStatus, Received
from convhook.store.inbox.store import open_inbox
from tests.support.servers import free_port

LONG = "evt_" + "x" * 28  # as long as a generated id


def _convhook(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-m", "convhook", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _fill(db: Path, count: int, *, failed: bool = True) -> list[str]:
    """``count`` stored events, each failed after one attempt with a long error."""

    async def fill() -> list[str]:
        ids = [LONG[: -len(str(n))] + str(n) for n in range(count)]
        async with open_inbox(db) as inbox:
            for n, event_id in enumerate(ids):
                body = {"eventId": event_id, "eventType": "conversation.userLeft", "payload": {}}
                body["payload"] = {"id": f"conv_{n:036d}"}
                received = Received(
                    event_id,
                    f"msg_{n}",
                    "conversation.userLeft",
                    json.dumps(body).encode(),
                    {"content-type": "application/json", "webhook-id": f"msg_{n}"},
                    time.time(),
                )
                assert await inbox.add(received)
                if failed:
                    await inbox.fail(
                        event_id, time.time(), "forward to x: " + "boom " * 40, (), None
                    )
        return ids

    return asyncio.run(fill())


def test_list_fits_a_narrow_terminal_with_whole_ids(tmp_path: Path) -> None:
    """At 80 columns every line fits and every event id is printed whole on one line (the
    conversation column makes room first)."""
    db = tmp_path / "inbox.db"
    ids = _fill(db, 3)
    done = _convhook("inbox", "list", "--db", str(db), columns=80)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), done.stdout
    for event_id in ids:
        assert any(event_id in line for line in lines), done.stdout
    wide = _convhook("inbox", "list", "--db", str(db), columns=200)
    assert "conv_" in wide.stdout
    assert "conv_" not in done.stdout


def test_show_prints_json_spellings(tmp_path: Path) -> None:
    """``inbox show`` writes lists and nulls as JSON does, never Python's repr."""
    db = tmp_path / "inbox.db"
    [event_id] = _fill(db, 1)
    done = _convhook("inbox", "show", event_id, "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "handlersDone: []" in done.stdout
    assert "None" not in done.stdout
    assert "webhookId: msg_0" in done.stdout


async def _target(port: int, seen: list[bytes]) -> Any:
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_forwarding_replay_marks_a_failed_event_done(tmp_path: Path) -> None:
    """A failed event re-forwarded with success is done afterwards, says so in the command's
    output, and no longer appears in ``inbox list --status failed``."""
    db = tmp_path / "inbox.db"
    [event_id] = await asyncio.to_thread(_fill, db, 1)
    port = free_port()
    seen: list[bytes] = []
    runner = await _target(port, seen)
    try:
        done = await asyncio.to_thread(
            _convhook,
            *("inbox", "replay", event_id, "--forward-to", f"http://127.0.0.1:{port}/hook"),
            *("--db", str(db), "--json"),
        )
    finally:
        await runner.cleanup()
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)
    assert result["status"] == 200
    assert result["inboxStatus"] == "done"
    assert len(seen) == 1
    async with open_inbox(db) as inbox:
        entry = await inbox.get(event_id)
        assert entry is not None
        assert entry.status is HandlerStatus.DONE
        assert "forward" in entry.handlers_done
    listed = await asyncio.to_thread(
        _convhook, "inbox", "list", "--status", "failed", "--db", str(db), "--json"
    )
    assert json.loads(listed.stdout) == []
