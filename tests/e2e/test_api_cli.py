"""The producer's commands as real subprocesses: workspaces create/list and events tail."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.e2e.test_api_serve import create_workspace, serve_process
from tests.support.servers import free_port


def convhook(*args: str) -> str:
    """Run ``convhook ARGS`` and return its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "convhook", *args], capture_output=True, text=True, check=True
    )
    return done.stdout


async def test_workspaces_and_events_tail(tmp_path: Path) -> None:
    """workspaces create --json prints a usable key, list shows it, and events tail --json
    streams each event as it is recorded."""
    db = tmp_path / "cli.db"
    created = create_workspace(db, "acme")
    assert created["apiKey"].startswith("chk_")
    listed = json.loads(convhook("workspaces", "list", "--db", str(db), "--json"))
    assert [w["name"] for w in listed] == ["acme"]
    port = free_port()
    with (
        serve_process(["serve", "--port", str(port), "--db", str(db)], tmp_path, port) as server,
        serve_process(
            ["events", "tail", "--db", str(db), "--json", "--interval", "0.1", "--from-start"],
            tmp_path,
        ) as tail,
    ):
        assert "Created workspace" not in server.stderr
        base = f"http://127.0.0.1:{port}/api/v2"
        async with aiohttp.ClientSession(headers={"x-api-key": created["apiKey"]}) as s:
            async with s.post(f"{base}/conversations", json={"agentId": "a"}) as r:
                conv = await r.json()
            for action in ("join", "leave"):
                async with s.post(f"{base}/conversations/{conv['id']}/{action}") as r:
                    assert r.status == 200
        deadline = time.monotonic() + 10
        while tail.stdout.count("\n") < 2 and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a file another process writes
            await asyncio.sleep(0.1)
        lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [(e["eventType"], e["conversationSeq"]) for e in lines] == [
        ("conversation.userJoined", 1),
        ("conversation.userLeft", 2),
    ]
    assert {e["conversationId"] for e in lines} == {conv["id"]}
    listed_events = convhook("events", "list", "--db", str(db), "--json")
    assert len(listed_events.splitlines()) == 2
