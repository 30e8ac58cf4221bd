"""A delivery dropped on purpose is filled by the receiver from the producer's API before the
next event's handler runs: a real ``convhook serve`` (API and dispatcher) delivers a
conversation's events to a real receiver process; its endpoint is disabled while ``userLeft``
is recorded, so that event is never delivered; the receiver, given the API URL and a
workspace key, fetches it when ``completed`` arrives with the next sequence and handles it
first. On SQLite and PostgreSQL (both the producer's database and the inbox)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from convhook.store import open_database
from convhook.store.inbox.store import open_inbox
from tests.support.postgres import TemporaryPostgres
from tests.support.servers import cli_process, free_port, wait_for_port

pytestmark = pytest.mark.slow

KEY = re.compile(r"chk_[A-Za-z0-9_-]+")

# The receiver: the library on uvicorn, behind a layer that notes every attempt's type and
# sequence (so the test sees which events were really delivered).
RECEIVER = """
import json, sys
import uvicorn
from convhook.receiver import Receiver
from convhook.store.inbox.store import open_inbox

port, secret, store, api, key, out, attempts = sys.argv[1:8]
receiver = Receiver(
    secrets=[secret],
    store=open_inbox(store, auto_upgrade=True),
    poll_interval=0.1,
    reconcile_url=api,
    reconcile_key=key,
    reconcile_wait=30,
)

@receiver.on_any
async def seen(event, delivery) -> None:
    if not event.event_type.startswith("conversation."):
        return
    with open(out, "a") as f:
        line = {"eventType": event.event_type, "sequence": delivery.sequence,
                "origin": delivery.origin}
        f.write(json.dumps(line) + "\\n")

class Noted:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = dict((k.decode(), v.decode()) for k, v in scope["headers"])
        event_type = json.loads(body)["eventType"]
        with open(attempts, "a") as f:
            line = {"eventType": event_type, "sequence": headers.get("convhook-sequence")}
            f.write(json.dumps(line) + "\\n")
        given = False

        async def again():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, again, send)

uvicorn.run(Noted(receiver.asgi_app(path="/webhook")), port=int(port),
            log_level="warning", lifespan="on")
"""


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def _until(path: Path, check: Any, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _lines(path)
        if check(lines):
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"not met in time; {path.name}: {lines}")
        await asyncio.sleep(0.1)


@pytest.fixture
def inbox_url(database_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The receiver's inbox on the producer database's engine."""
    if database_url.startswith("postgresql://"):
        server: TemporaryPostgres = request.getfixturevalue("pg_server")
        return server.create_database(f"i_{uuid.uuid4().hex[:12]}")
    return str(tmp_path / "inbox.db")


@contextlib.asynccontextmanager
async def _producer(
    database_url: str, inbox_url: str, tmp_path: Path, hook_port: int
) -> AsyncIterator[tuple[str, str, aiohttp.ClientSession, dict[str, Any]]]:
    """A real `convhook serve` on ``database_url`` with an endpoint to ``hook_port``'s
    /webhook: its API base URL, its key, a session sending the key, and the endpoint."""
    if database_url.startswith("postgresql://"):
        # serve checks a PostgreSQL schema; it does not apply it.
        async with open_database(database_url, "producer", auto_upgrade=True):
            pass
        async with open_inbox(inbox_url, auto_upgrade=True):
            pass
    api_port = free_port()
    args = ["serve", "--port", str(api_port), "--db", database_url, "--allow-private-targets"]
    with cli_process(args, cwd=tmp_path, port=api_port) as serve:
        found = KEY.search(serve.stderr)
        assert found, serve.stderr
        base = f"http://127.0.0.1:{api_port}"
        async with aiohttp.ClientSession(headers={"x-api-key": found[0]}) as http:
            hook = f"http://127.0.0.1:{hook_port}/webhook"
            async with http.post(f"{base}/api/v2/endpoints", json={"url": hook}) as r:
                assert r.status == 201, await r.text()
                endpoint = await r.json()
            yield base, found[0], http, endpoint


async def test_a_dropped_delivery_is_filled_from_the_api_before_the_next_handler(
    database_url: str, inbox_url: str, tmp_path: Path
) -> None:
    """The handler sees userJoined, userLeft (fetched from the API) and completed in order,
    each once; the inbox records the gap as filled and the fetched event as reconciled."""
    hook_port = free_port()
    script = tmp_path / "receiver.py"
    script.write_text(textwrap.dedent(RECEIVER))
    seen, attempts = tmp_path / "seen.jsonl", tmp_path / "attempts.jsonl"
    async with _producer(database_url, inbox_url, tmp_path, hook_port) as (
        base,
        key,
        http,
        endpoint,
    ):
        secret = endpoint["secret"]
        argv = [str(script), str(hook_port), secret, inbox_url, base, key]
        receiver = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            str(seen),
            str(attempts),
            cwd=tmp_path,
            env=os.environ.copy(),
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            wait_for_port(hook_port)
            async with http.post(f"{base}/api/v2/conversations", json={"agentId": "a"}) as r:
                conv = (await r.json())["id"]

            async def move(action: str) -> None:
                async with http.post(f"{base}/api/v2/conversations/{conv}/{action}") as r:
                    assert r.status == 200, await r.text()

            async def endpoint_to(action: str) -> None:
                path = f"{base}/api/v2/endpoints/{endpoint['id']}/{action}"
                async with http.post(path) as r:
                    assert r.status == 200, await r.text()

            await move("join")
            await _until(seen, lambda lines: len(lines) == 1)
            # userLeft is recorded while the endpoint is disabled: never delivered.
            await endpoint_to("disable")
            await move("leave")
            await endpoint_to("enable")
            await move("end")
            lines = await _until(seen, lambda lines: len(lines) == 3)
            await asyncio.sleep(0.5)
            assert _lines(seen) == lines
            tried = [a for a in _lines(attempts) if a["eventType"].startswith("conv")]
        finally:
            receiver.terminate()
            _, raw = await asyncio.wait_for(receiver.communicate(), 15)
            errors = raw.decode(errors="replace")
    assert lines == [
        {"eventType": "conversation.userJoined", "sequence": 1, "origin": "delivery"},
        {"eventType": "conversation.userLeft", "sequence": 2, "origin": "reconciled"},
        {"eventType": "conversation.completed", "sequence": 3, "origin": "delivery"},
    ], errors
    assert [(a["eventType"], a["sequence"]) for a in tried] == [
        ("conversation.userJoined", "1"),
        ("conversation.completed", "3"),
    ]

    gaps = _cli_json(["inbox", "gaps", "--json", "--db", inbox_url], tmp_path)
    assert gaps["counts"] == {"filled": 1}
    [gap] = gaps["gaps"]
    assert (gap["conversationId"], gap["missing"], gap["status"], gap["filled"]) == (
        conv,
        "2",
        "filled",
        1,
    )
    listed = _cli_json(["inbox", "list", "--json", "--db", inbox_url], tmp_path)
    by_type = {e["eventType"]: e for e in listed}
    assert by_type["conversation.userLeft"]["origin"] == "reconciled"
    assert by_type["conversation.completed"]["gap"]["status"] == "filled"
    assert by_type["conversation.userJoined"]["gap"] is None


def _cli_json(args: list[str], cwd: Path) -> Any:
    return json.loads(_cli(args, cwd))


async def test_convhook_listen_fills_a_gap_with_its_reconcile_options(
    database_url: str, inbox_url: str, tmp_path: Path
) -> None:
    """`convhook listen --reconcile-api-url/--reconcile-api-key` prints the missed event,
    marked as fetched, before the next one; `inbox gaps` and `inbox list` show the gap."""
    hook_port = free_port()
    async with _producer(database_url, inbox_url, tmp_path, hook_port) as (
        base,
        key,
        http,
        endpoint,
    ):
        listen = [
            "listen",
            "--port",
            str(hook_port),
            "--db",
            inbox_url,
            "--secret",
            endpoint["secret"],
            "--reconcile-api-url",
            base,
            "--reconcile-api-key",
            key,
        ]
        with cli_process(listen, cwd=tmp_path, port=hook_port) as receiver:
            async with http.post(f"{base}/api/v2/conversations", json={"agentId": "a"}) as r:
                conv = (await r.json())["id"]

            async def post(path: str) -> None:
                async with http.post(f"{base}/api/v2/{path}") as r:
                    assert r.status == 200, await r.text()

            await post(f"conversations/{conv}/join")
            await _printed(receiver, 1)
            await post(f"endpoints/{endpoint['id']}/disable")
            await post(f"conversations/{conv}/leave")
            await post(f"endpoints/{endpoint['id']}/enable")
            await post(f"conversations/{conv}/end")
            printed = await _printed(receiver, 3)
    assert [line.split()[1] for line in printed] == [
        "conversation.userJoined",
        "conversation.userLeft",
        "conversation.completed",
    ]
    assert "(fetched from the API" in printed[1]
    assert "fetched" not in printed[0] + printed[2]

    summary = _cli(["inbox", "gaps", "--db", inbox_url], tmp_path)
    assert "gaps: 0 open, 1 filled, 0 unfilled; handled out of order: 0" in summary
    table = _cli(["inbox", "list", "--db", inbox_url], tmp_path, columns=200)
    assert "reconciled" in table
    assert "after gap 2 filled" in table


async def _printed(proc: Any, count: int, timeout: float = 30) -> list[str]:
    """The conversation event lines ``convhook listen`` printed, once there are ``count``."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in proc.stdout.splitlines() if " conversation." in line]
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"listen printed {lines}; stderr: {proc.stderr}")
        await asyncio.sleep(0.1)


def _cli(args: list[str], cwd: Path, columns: int = 120) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "convhook", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "COLUMNS": str(columns)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_listen_refuses_a_reconcile_url_without_a_key(tmp_path: Path) -> None:
    """`convhook listen --reconcile-api-url` without a key fails at once, naming both options."""
    url = ["--reconcile-api-url", "http://127.0.0.1:9"]
    done = subprocess.run(
        [sys.executable, "-m", "convhook", "listen", "--port", str(free_port()), *url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--reconcile-api-url and --reconcile-api-key go together" in done.stderr
    assert not (tmp_path / "convhook-inbox.db").exists()
