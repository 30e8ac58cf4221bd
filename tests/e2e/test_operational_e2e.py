"""Operational events through real processes: a 410 from one endpoint makes a running
``convhook serve`` disable it and deliver ``endpoint.disabled``, signed, to a second endpoint
that subscribed to it, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import aiohttp

from convhook import EndpointDisabled, parse_event
from convhook.signing import Verifier
from tests.support.delivery import Receiver, Reply
from tests.support.servers import cli_process, free_port, serve_app

KEY = re.compile(r"chk_[A-Za-z0-9_-]+")


async def test_a_410_reaches_a_subscriber_as_endpoint_disabled(
    tmp_path: Path, database_url: str
) -> None:
    """Endpoint A answers 410 to a join; endpoint B (subscribed to endpoint.disabled only)
    gets one endpoint.disabled naming A, signed with B's secret, and no conversation event;
    A is disabled in the API with the reason."""
    if database_url.startswith("postgresql"):
        upgrade = [sys.executable, "-m", "convhook", "db", "upgrade", "--db", database_url]
        await asyncio.to_thread(subprocess.run, upgrade, check=True, capture_output=True)
    gone = Receiver().then(Reply(status=410))
    watcher = Receiver()
    port = free_port()
    args = ["serve", "--port", str(port), "--db", database_url, "--allow-private-targets"]
    async with serve_app(gone) as a_url, serve_app(watcher) as b_url:
        with cli_process(args, cwd=tmp_path, port=port) as serve:
            key = KEY.search(serve.stderr)
            assert key, serve.stderr
            base = f"http://127.0.0.1:{port}/api/v2"
            async with aiohttp.ClientSession(headers={"x-api-key": key[0]}) as http:
                async with http.post(f"{base}/endpoints", json={"url": a_url + "/a"}) as r:
                    assert r.status == 201, await r.text()
                    a_id = (await r.json())["id"]
                subscribed = {"url": b_url + "/b", "eventTypes": ["endpoint.disabled"]}
                async with http.post(f"{base}/endpoints", json=subscribed) as r:
                    assert r.status == 201, await r.text()
                    b_secret = (await r.json())["secret"]
                async with http.post(f"{base}/conversations", json={"agentId": "a"}) as r:
                    conv = (await r.json())["id"]
                async with http.post(f"{base}/conversations/{conv}/join") as r:
                    assert r.status == 200, await r.text()
                (got,) = await watcher.wait_for(1, timeout=20)
                async with http.get(f"{base}/endpoints/{a_id}") as r:
                    a_state = await r.json()
            await asyncio.sleep(0.3)  # anything else would have been sent by now
    Verifier([b_secret]).verify(got.headers, got.body)
    event = parse_event(got.body)
    assert isinstance(event, EndpointDisabled)
    assert event.payload.endpoint_id == a_id
    assert event.payload.enabled is False
    assert "410" in (event.payload.disabled_reason or "")
    # A's first event is the join's delivery.failed (the 410 ended it), B not subscribed.
    assert got.headers["convhook-sequence"] == "2"
    assert got.headers["convhook-previous-event-id"].startswith("evt_")
    assert len(watcher.received) == 1
    assert len(gone.received) == 1
    assert a_state["enabled"] is False
