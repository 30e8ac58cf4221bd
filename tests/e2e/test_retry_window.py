"""``--retry-window`` of ``serve`` and ``dispatcher``: the retry schedule fitted into the window
an operator gives (1 minute to 3 days), anything else refused naming the option."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.delivery import Receiver, Reply
from tests.support.servers import cli_process, free_port, serve_app

KEY = re.compile(r"chk_[A-Za-z0-9_-]+")


@pytest.mark.parametrize("command", ["serve", "dispatcher"])
@pytest.mark.parametrize("window", ["5x", "30s", "4d", "-1h", "1.5h"])
def test_a_window_that_is_not_1m_to_3d_exits_2(tmp_path: Path, command: str, window: str) -> None:
    """A malformed window or one outside 1m..3d is a usage error naming --retry-window,
    from the option and from CONVHOOK_RETRY_WINDOW, before any database is created."""
    db = tmp_path / "p.db"
    for args, env in (
        ([command, "--db", str(db), "--retry-window", window], {}),
        ([command, "--db", str(db)], {"CONVHOOK_RETRY_WINDOW": window}),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "convhook", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
        assert done.returncode == 2, (args, env, done.stdout, done.stderr)
        assert "--retry-window" in done.stderr
        assert not db.exists()


async def test_a_short_window_retries_sooner(tmp_path: Path) -> None:
    """With --retry-window 1m a failing endpoint is tried again within seconds (the default
    schedule waits 5 minutes before the third attempt)."""
    failing = Receiver().then(*[Reply(status=500)] * 20)
    port = free_port()
    args = ["serve", "--port", str(port), "--db", str(tmp_path / "p.db")]
    args += ["--allow-private-targets", "--retry-window", "1m"]
    async with serve_app(failing) as hook:
        with cli_process(args, cwd=tmp_path, port=port) as serve:
            key = KEY.search(serve.stderr)
            assert key, serve.stderr
            base = f"http://127.0.0.1:{port}/api/v2"
            async with aiohttp.ClientSession(headers={"x-api-key": key[0]}) as http:
                async with http.post(f"{base}/endpoints", json={"url": hook + "/h"}) as r:
                    assert r.status == 201, await r.text()
                async with http.post(f"{base}/conversations", json={"agentId": "a"}) as r:
                    conv = (await r.json())["id"]
                started = time.monotonic()
                async with http.post(f"{base}/conversations/{conv}/join") as r:
                    assert r.status == 200
                await failing.wait_for(3, timeout=20)
    assert time.monotonic() - started < 20
    assert len({r.event["eventId"] for r in failing.received}) == 1
