"""``convhook dev``: the producer and a receiver wired together work on the first try, and
again on the next start; a busy port stops it before anything is created."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_api_serve import ServeProcess
from tests.support.servers import eventually, free_port

pytestmark = pytest.mark.slow

KEY = re.compile(r"KEY=(chk_[A-Za-z0-9_-]+)")
TYPES = (
    "conversation.userJoined",
    "conversation.userLeft",
    "conversation.completed",
    "conversation.analysisCompleted",
)


async def _lifecycle(base: str, key: str) -> str:
    """The quick start's steps through the API; the conversation id."""
    headers = {"x-api-key": key}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{base}/api/v2/customers", json={"name": "Jane Doe"}) as r:
            assert r.status == 201, await r.text()
            customer = (await r.json())["id"]
        body = {"agentId": "agent_1", "customerId": customer}
        async with http.post(f"{base}/api/v2/conversations", json=body) as r:
            assert r.status == 201, await r.text()
            conv: str = (await r.json())["id"]
        for action, data in (
            ("join", None),
            ("leave", None),
            ("end", None),
            ("analysis", {"summary": "Booked a demo."}),
        ):
            async with http.post(f"{base}/api/v2/conversations/{conv}/{action}", json=data) as r:
                assert r.status == 200, await r.text()
    return conv


def _start(tmp_path: Path, api: int, rx: int) -> ServeProcess:
    args = ["dev", "--port", str(api), "--listen-port", str(rx)]
    args += ["--db", str(tmp_path / "dev.db"), "--inbox", str(tmp_path / "inbox.db")]
    return ServeProcess(args, tmp_path, api)


async def test_the_quick_start_shows_every_event_arriving(tmp_path: Path) -> None:
    """The printed key drives a conversation through join, leave, end and analysis, and the
    receiver prints all four events; a second start on the same files prints a new key that
    works and reuses the endpoint (each event still arrives once), while the first run's key
    no longer does."""
    api, rx = free_port(), free_port()
    keys: list[str] = []
    for _ in range(2):
        proc = _start(tmp_path, api, rx)
        try:
            await eventually(lambda p=proc: KEY.search(p.stderr))  # type: ignore[misc]
            match = KEY.search(proc.stderr)
            assert match is not None
            keys.append(match[1])
            conv = await _lifecycle(f"http://127.0.0.1:{api}", match[1])
            if len(keys) == 2:
                headers = {"x-api-key": keys[0]}
                events = f"http://127.0.0.1:{api}/api/v2/events"
                async with aiohttp.ClientSession(headers=headers) as http, http.get(events) as r:
                    assert r.status == 401

            def arrived(p: ServeProcess = proc, c: str = conv) -> bool:
                lines = [line for line in p.stdout.splitlines() if c in line]
                return len(lines) == len(TYPES)

            await eventually(arrived)
            lines = [line for line in proc.stdout.splitlines() if conv in line]
            assert [t for line in lines for t in TYPES if f" {t} " in line] == list(TYPES)
        finally:
            # Like `convhook serve`: a clean shutdown, then the SIGTERM re-raised (uvicorn).
            assert proc.stop() in (0, -signal.SIGTERM), proc.stderr


def test_a_busy_port_fails_before_anything_is_created(tmp_path: Path) -> None:
    """With the receiver's port taken, dev exits with an error naming the port, and no
    database file was created."""
    api = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        rx = busy.getsockname()[1]
        args = ["dev", "--port", str(api), "--listen-port", str(rx)]
        args += ["--db", str(tmp_path / "dev.db"), "--inbox", str(tmp_path / "inbox.db")]
        proc = ServeProcess(args, tmp_path)
        assert proc.proc.wait(30) == 2
        assert f"127.0.0.1:{rx}" in proc.stderr
        proc.stop()
    assert not (tmp_path / "dev.db").exists()
    assert not (tmp_path / "inbox.db").exists()
