"""`convhook listen` in production: /healthz and /readyz (through a PostgreSQL outage), log
records as JSON lines or one-line text, the unsigned warning once, and what SIGTERM waits for.
Real processes, a real PostgreSQL server halted and restarted."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from convhook.signing import Secret
from tests.e2e.test_receiver_listen import convhook, trigger
from tests.support.postgres import TemporaryPostgres
from tests.support.servers import CLIProcess, eventually, free_port, wait_for_port

pytestmark = pytest.mark.slow


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, json.loads(await r.read())


async def _start(args: list[str], cwd: Path, port: int, env: dict[str, str]) -> CLIProcess:
    proc = CLIProcess(["listen", "--port", str(port), *args], cwd=cwd, env=env)
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0, proc.proc)
    except BaseException:
        await asyncio.to_thread(proc.stop)
        raise
    return proc


def _records(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object (fails on a line that is not one)."""
    return [json.loads(line) for line in text.splitlines()]


async def test_listen_answers_health_checks_without_signature_or_token(tmp_path: Path) -> None:
    """`listen` with a secret and a token answers GET /healthz and GET /readyz (inbox, schema
    and worker ok) without either, while a POST without them is still refused."""
    secret, token = str(Secret.generate()), "tok_" + "h" * 32
    port = free_port()
    args = ["--secret", secret, "--token", token, "--db", str(tmp_path / "i.db")]
    proc = await _start(args, tmp_path, port, {})
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            assert await _get(http, f"{base}/healthz") == (200, {"status": "alive"})
            assert await _get(http, f"{base}/readyz") == (
                200,
                {"status": "ready", "checks": {"database": "ok", "schema": "ok", "worker": "ok"}},
            )
            async with http.post(f"{base}/webhook", json={}) as r:
                assert r.status == 401
            async with http.post(f"{base}/readyz", json={}) as r:
                assert r.status == 404
    finally:
        await asyncio.to_thread(proc.stop)


async def test_listen_readyz_follows_a_postgres_outage(tmp_path: Path) -> None:
    """While the inbox's PostgreSQL server is down, /readyz answers 503 within the probe's
    bound, naming the database check and neither the server nor the URL, and /healthz stays
    200; once the server is back, /readyz answers 200 again."""
    with TemporaryPostgres(durable=True) as server:
        url = server.create_database("listen_health")
        code, _, err = await convhook(
            "db", "upgrade", "--db", url, "--component", "inbox", cwd=tmp_path
        )
        assert code == 0, err
        port = free_port()
        proc = await _start(["--db", url, "--quiet"], tmp_path, port, {})
        try:
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:

                async def ready() -> bool:
                    return (await _get(http, f"{base}/readyz"))[0] == 200

                await eventually(ready, timeout=20, interval=0.1)
                server.halt()
                started = time.monotonic()
                status, body = await _get(http, f"{base}/readyz")
                assert time.monotonic() - started < 5
                assert status == 503
                assert body["status"] == "unavailable"
                assert body["checks"]["database"] == "unreachable"
                assert body["checks"]["worker"] == "ok"
                text = json.dumps(body)
                assert "postgresql" not in text
                assert str(server.port) not in text
                assert (await _get(http, f"{base}/healthz"))[0] == 200
                server.restart()
                await eventually(ready, timeout=20, interval=0.2)
            assert proc.proc.poll() is None, proc.stderr
        finally:
            await asyncio.to_thread(proc.stop)


async def test_json_logs_keep_stdout_for_events_and_say_what_sigterm_waits_for(
    tmp_path: Path,
) -> None:
    """With CONVHOOK_LOG_FORMAT=json every stderr line is a JSON record with an action (the
    unsigned warning once, no banner), stdout holds only event lines, and SIGTERM logs what
    the shutdown waits for before the process dies of the signal."""
    port = free_port()
    env = {"CONVHOOK_LOG_FORMAT": "json", "COLUMNS": "40"}
    proc = await _start(["--db", str(tmp_path / "i.db")], tmp_path, port, env)
    try:
        code, _, err = await trigger("conversation.completed", port, tmp_path, "--count", "2")
        assert code == 0, err
        await eventually(lambda: proc.stdout.count("conversation.completed") == 2)
    finally:
        returncode = await asyncio.to_thread(proc.stop)
    assert returncode == -signal.SIGTERM
    records = _records(proc.stderr)
    actions = [r["action"] for r in records]
    assert all(isinstance(a, str) and a for a in actions), records
    assert actions.count("unsigned_mode") == 1
    assert proc.stderr.count("UNSIGNED") == 1
    [listening] = [r for r in records if r["action"] == "listening"]
    assert listening["url"] == f"http://127.0.0.1:{port}/webhook"
    assert listening["checks"] == []
    assert actions[-3:] == ["listen_stopping", "worker_stopping", "listen_stopped"]
    stopping = records[-3]
    assert stopping["signal"] == "SIGTERM"
    assert stopping["grace_s"] == 10.0
    assert "handlers get up to 10 s" in stopping["message"]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert all(line.split()[1] == "conversation.completed" for line in lines)


async def test_text_logs_are_one_line_each_and_warn_once(tmp_path: Path) -> None:
    """In text mode on a pipe, on a 40-column terminal setting, the unsigned warning appears
    once and unwrapped, and every log record (a refusal included) is one line."""
    port = free_port()
    proc = await _start(["--db", str(tmp_path / "i.db")], tmp_path, port, {"COLUMNS": "40"})
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/webhook"
            async with http.post(url, data=b"{}", headers={"content-type": "text/plain"}) as r:
                assert r.status == 415
        await eventually(lambda: "webhook_rejected" in proc.stderr)
    finally:
        await asyncio.to_thread(proc.stop)
    lines = proc.stderr.splitlines()
    [warning] = [line for line in lines if "UNSIGNED" in line]
    assert warning.endswith("to verify signatures.")
    [refused] = [line for line in lines if "webhook_rejected" in line]
    assert refused.split()[1:4] == ["warning", "convhook.receiver", "webhook_rejected"]
    assert "content-type must be application/json" in refused
    assert any(line.split()[3:4] == ["listen_stopping"] for line in lines)


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--log-level", "loud", "debug, info, warning, error, critical"),
        ("--log-format", "xml", "text, json"),
    ],
)
async def test_a_bad_log_option_is_a_clear_error(
    tmp_path: Path, option: str, value: str, allowed: str
) -> None:
    """An unknown --log-level or --log-format exits 2 listing the allowed values, without a
    traceback and without starting to listen."""
    code, out, err = await convhook(
        "listen", option, value, "--port", str(free_port()), cwd=tmp_path
    )
    assert code == 2
    assert allowed in err
    assert value in err
    assert "Traceback" not in err
    assert out == ""
    assert not (tmp_path / "convhook-inbox.db").exists()
