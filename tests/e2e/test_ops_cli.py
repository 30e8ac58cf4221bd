"""Operating the server commands: a busy port fails before anything is created, logs come
as JSON lines with their action and say what a stop waits for, bad option values are clear
errors, the dispatcher's metrics port stays on loopback, and the inbox commands never read the
producer's database variable."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_api_serve import ServeProcess
from tests.support.servers import free_port, wait_for_port

pytestmark = pytest.mark.slow


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convhook", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_serve_on_a_busy_port_fails_before_creating_anything(tmp_path: Path) -> None:
    """With its port taken, serve exits 2 naming the address; no database, no workspace
    and no key were created."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run("serve", "--port", str(port), "--db", str(tmp_path / "p.db"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "chk_" not in done.stderr
    assert not (tmp_path / "p.db").exists()


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--log-level", "verbose", "debug, info, warning, error, critical"),
        ("--log-format", "xml", "text, json"),
    ],
)
def test_bad_log_options_are_clear_errors(
    tmp_path: Path, option: str, value: str, allowed: str
) -> None:
    """An unknown log level or format exits 2 listing the allowed values (no traceback)."""
    for command in ("serve", "dispatcher"):
        done = _run(command, option, value, "--db", str(tmp_path / "p.db"), cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert allowed in done.stderr
        assert "Traceback" not in done.stderr


def test_serve_logs_json_lines_and_what_a_stop_waits_for(tmp_path: Path) -> None:
    """With --log-format json every log line on stderr is a JSON object with an action; on
    SIGTERM one says what the stop waits for, then one says it stopped."""
    port = free_port()
    proc = ServeProcess(
        ["serve", "--port", str(port), "--db", str(tmp_path / "p.db"), "--log-format", "json"],
        tmp_path,
        port,
    )
    proc.stop()
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    actions = [r["action"] for r in records]
    assert "shutdown" in actions
    assert actions[-1] == "stopped"
    [shutdown] = [r for r in records if r["action"] == "shutdown"]
    assert "delivery attempts in flight" in shutdown["message"]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


def _listening_address(port: int) -> str:
    """The local address of the socket listening on ``port`` (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            return socket.inet_ntoa(bytes.fromhex(address)[::-1])
    raise AssertionError(f"nothing listens on {port}")


def test_dispatcher_metrics_port_binds_loopback_by_default(tmp_path: Path) -> None:
    """Without --metrics-host the dispatcher's metrics and health port listens on 127.0.0.1
    only, and answers /healthz there."""
    metrics = free_port()
    db = str(tmp_path / "p.db")
    upgrade = _run("db", "upgrade", "--db", db, cwd=tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    proc = ServeProcess(["dispatcher", "--db", db, "--metrics-port", str(metrics)], tmp_path)
    try:
        wait_for_port(metrics, proc=proc.proc)
        assert _listening_address(metrics) == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", metrics), 5) as s:
            s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            time.sleep(0.2)
            assert s.recv(100).startswith(b"HTTP/1.0 200")
    finally:
        assert proc.stop() in (0, -signal.SIGTERM), proc.stderr


def test_inbox_commands_ignore_the_producers_database_variable(tmp_path: Path) -> None:
    """CONVHOOK_DATABASE_URL names the producer's database and the inbox commands do not
    read it (they would create inbox tables inside it); CONVHOOK_INBOX_URL is theirs."""
    producer = tmp_path / "producer.db"
    upgrade = _run("db", "upgrade", "--db", str(producer), cwd=tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    env = {"CONVHOOK_DATABASE_URL": str(producer)}
    done = _run("inbox", "list", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "no inbox at" in done.stderr
    assert str(producer) not in done.stderr
    inbox = tmp_path / "inbox.db"
    created = _run("db", "upgrade", "--db", str(inbox), "--component", "inbox", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    done = _run(
        "inbox", "list", "--json", cwd=tmp_path, env={**env, "CONVHOOK_INBOX_URL": str(inbox)}
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_any_command_logs_json_when_asked(tmp_path: Path, pg_url: str) -> None:
    """``convhook --log-format json`` applies to every command: ``db upgrade`` on PostgreSQL
    writes its migration records as JSON lines with their action."""
    args = ["--log-format", "json", "--log-level", "info", "db", "upgrade", "--db", pg_url]
    done = _run(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(r["action"] == "migration_applied" for r in records), done.stderr


def test_listen_on_a_busy_port_fails_before_creating_anything(tmp_path: Path) -> None:
    """With its port taken, listen exits 2 naming the address, before any inbox file or
    banner."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run("listen", "--port", str(port), "--db", str(tmp_path / "i.db"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "convhook listen:" not in done.stderr
    assert not (tmp_path / "i.db").exists()
