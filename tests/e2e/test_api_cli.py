"""The producer's commands as real subprocesses: workspaces create/list, events tail/list and
prune, and serve's schema check, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_api_serve import create_workspace, serve_process, upgrade
from tests.support.servers import free_port


def convhook(*args: str) -> str:
    """Run ``convhook ARGS`` and return its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "convhook", *args], capture_output=True, text=True, check=True
    )
    return done.stdout


async def test_workspaces_and_events_tail(database_url: str, tmp_path: Path) -> None:
    """workspaces create --json prints a usable key, list shows it, events tail --json
    streams each event as it is recorded, and events prune keeps young events."""
    db = database_url
    if db.startswith("postgresql://"):
        upgrade(db)
    created = create_workspace(db, "acme")
    assert created["apiKey"].startswith("chk_")
    listed = json.loads(convhook("workspaces", "list", "--db", db, "--json"))
    assert [w["name"] for w in listed] == ["acme"]
    port = free_port()
    with (
        serve_process(["serve", "--port", str(port), "--db", db], tmp_path, port) as server,
        serve_process(
            ["events", "tail", "--db", db, "--json", "--interval", "0.1", "--from-start"],
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
    listed_events = convhook("events", "list", "--db", db, "--json")
    assert len(listed_events.splitlines()) == 2
    pruned = json.loads(convhook("events", "prune", "--db", db, "--json", "--older-than", "1d"))
    assert (pruned["pruned"], pruned["batches"]) == (0, 0)


def test_serve_refuses_a_postgres_schema_not_upgraded(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a PostgreSQL database without the producer schema, serve exits naming the command
    to run; after `convhook db upgrade` it starts (database from CONVHOOK_DATABASE_URL) and
    creates the first workspace."""
    done = subprocess.run(
        [sys.executable, "-m", "convhook", "serve", "--port", str(free_port()), "--db", pg_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert "producer schema" in message
    assert "convhook db upgrade" in message
    assert "Traceback" not in done.stderr
    upgrade(pg_url)
    monkeypatch.setenv("CONVHOOK_DATABASE_URL", pg_url)
    port = free_port()
    with serve_process(["serve", "--port", str(port)], tmp_path, port) as proc:
        assert 'Created workspace "default"' in proc.stderr


def test_events_prune_rejects_a_bad_period(tmp_path: Path) -> None:
    """--older-than must be a number with a unit; anything else is a one-line error."""
    args = ["events", "prune", "--db", str(tmp_path / "x.db"), "--older-than", "a month"]
    done = subprocess.run(
        [sys.executable, "-m", "convhook", *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "30d" in done.stderr
    assert "Traceback" not in done.stderr


async def test_keys_rotate_through_the_cli_while_serving(database_url: str, tmp_path: Path) -> None:
    """workspaces keys create prints a key that works at once beside the first; list --json
    shows both with the first's last use; after keys revoke, the running server answers 401
    to the revoked key within its 5-second cache bound and 200 to the new one."""
    db = database_url
    if db.startswith("postgresql://"):
        upgrade(db)
    first = create_workspace(db, "acme")["apiKey"]
    created = json.loads(
        convhook("workspaces", "keys", "create", "acme", "--name", "next", "--db", db, "--json")
    )
    assert created["key"].startswith("chk_")
    port = free_port()
    with serve_process(["serve", "--port", str(port), "--db", db], tmp_path, port):
        url = f"http://127.0.0.1:{port}/api/v2/customers"
        async with aiohttp.ClientSession() as http:

            async def status(key: str) -> int:
                async with http.get(url, headers={"x-api-key": key}) as r:
                    return r.status

            assert await status(first) == 200
            assert await status(created["key"]) == 200
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the last use is written in the background
                listed = json.loads(
                    convhook("workspaces", "keys", "list", "acme", "--db", db, "--json")
                )
                if listed[0]["lastUsedAt"]:
                    break
                await asyncio.sleep(0.1)
            assert [k["name"] for k in listed] == ["default", "next"]
            assert listed[0]["lastUsedAt"] is not None
            assert listed[1]["id"] == created["id"]
            table = convhook("workspaces", "keys", "list", "acme", "--db", db)
            assert listed[0]["id"] in table
            convhook("workspaces", "keys", "revoke", "acme", listed[0]["id"], "--db", db)
            revoked_at = time.monotonic()
            while await status(first) != 401:
                assert time.monotonic() - revoked_at < 6, "the revoked key kept working"
                await asyncio.sleep(0.1)
            assert await status(created["key"]) == 200
    listed = json.loads(convhook("workspaces", "keys", "list", "acme", "--db", db, "--json"))
    assert listed[0]["revokedAt"] is not None
    assert listed[1]["revokedAt"] is None


def test_keys_commands_refuse_unknown_names(tmp_path: Path) -> None:
    """keys list of an unknown workspace and keys revoke of an unknown key exit 2 with a
    one-line error."""
    db = str(tmp_path / "k.db")
    create_workspace(db, "acme")
    for args in (
        ["list", "nope"],
        ["revoke", "acme", "key_nope"],
        ["create", "nope", "--name", "x"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "convhook", "workspaces", "keys", *args, "--db", db],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2, args
        assert "error:" in done.stderr
        assert "Traceback" not in done.stderr
