"""`convhook serve` delivers by itself: the dispatcher runs inside the API process."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.servers import cli_process, free_port

KEY = re.compile(r"chk_[A-Za-z0-9_-]+")
LIFECYCLE = ("join", "leave", "end", "analysis")


def inbox(db: Path) -> list[dict[str, Any]]:
    """The receiver's stored events, via `convhook inbox list --json`."""
    done = subprocess.run(
        [sys.executable, "-m", "convhook", "inbox", "list", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


async def test_serve_delivers_and_tail_shows_attempts(tmp_path: Path) -> None:
    """With no separate dispatcher, serve delivers the four lifecycle events to a real
    `convhook listen`, signed and in order, and `events tail` shows each attempt."""
    api_port, hook_port = free_port(), free_port()
    db, inbox_db = tmp_path / "producer.db", tmp_path / "inbox.db"
    serve_args = ["serve", "--port", str(api_port), "--db", str(db), "--allow-private-targets"]
    with cli_process(serve_args, cwd=tmp_path, port=api_port) as serve:
        key = KEY.search(serve.stderr)
        assert key, serve.stderr
        base = f"http://127.0.0.1:{api_port}/api/v2"
        async with aiohttp.ClientSession(headers={"x-api-key": key[0]}) as http:
            url = f"http://127.0.0.1:{hook_port}/webhook"
            async with http.post(f"{base}/endpoints", json={"url": url}) as r:
                assert r.status == 201, await r.text()
                secret = (await r.json())["secret"]
            listen_args = ["listen", "--port", str(hook_port), "--secret", secret]
            listen_args += ["--db", str(inbox_db), "--quiet"]
            tail_args = ["events", "tail", "--db", str(db), "--json", "--interval", "0.1"]
            with (
                cli_process(listen_args, cwd=tmp_path, port=hook_port),
                cli_process([*tail_args, "--from-start"], cwd=tmp_path) as tail,
            ):
                async with http.post(f"{base}/conversations", json={"agentId": "a1"}) as r:
                    conv = (await r.json())["id"]
                for action in LIFECYCLE:
                    async with http.post(f"{base}/conversations/{conv}/{action}") as r:
                        assert r.status == 200, await r.text()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    attempts = [
                        json.loads(line) for line in tail.stdout.splitlines() if '"attempt"' in line
                    ]
                    if len(attempts) >= 4:
                        break
                    await asyncio.sleep(0.1)
            async with http.get(f"{base}/events") as r:
                recorded = [e["eventId"] for e in (await r.json())["data"]]
    assert [a["statusCode"] for a in attempts] == [200] * 4
    assert [a["deliveryStatus"] for a in attempts] == ["delivered"] * 4
    stored = inbox(inbox_db)
    assert sorted(e["eventId"] for e in stored) == sorted(recorded)
    # `inbox list` shows the newest arrival first.
    received_order = [e["eventType"] for e in reversed(stored)]
    assert received_order == [
        "conversation.userJoined",
        "conversation.userLeft",
        "conversation.completed",
        "conversation.analysisCompleted",
    ]
