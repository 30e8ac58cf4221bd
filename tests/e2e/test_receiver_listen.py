"""`convhook listen` and `convhook inbox` as real processes: trigger interop, unsigned mode,
failed forwards visible and replayable, and no acknowledged event lost to a SIGKILL, on a
SQLite inbox and on a PostgreSQL one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from convhook.signing import Secret, Verifier
from tests.support.inbox import is_postgres
from tests.support.servers import CLIProcess, eventually, free_port, serve_app, wait_for_port

pytestmark = pytest.mark.slow


def cli(args: list[str], cwd: Path) -> CLIProcess:
    """`convhook ARGS` as a subprocess with a wide terminal for its tables."""
    return CLIProcess(args, cwd=cwd, env={"COLUMNS": "240"})


async def convhook(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run one `convhook` command to completion without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "convhook",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "240"},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def trigger(
    event_type: str, port: int, cwd: Path, *options: str, secret: str | None = None
) -> tuple[int, str, str]:
    """`convhook trigger EVENT_TYPE` at the listener on ``port`` (signed when given a secret)."""
    signing = ["--secret", secret] if secret else []
    url = f"http://127.0.0.1:{port}/webhook"
    return await convhook("trigger", event_type, "--url", url, *signing, *options, cwd=cwd)


@contextlib.asynccontextmanager
async def listener(args: list[str], cwd: Path, port: int) -> AsyncIterator[CLIProcess]:
    proc = cli(["listen", "--port", str(port), *args], cwd)
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0, proc.proc)
        yield proc
    finally:
        await asyncio.to_thread(proc.stop)


class Target:
    """A forward target recording every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append((headers, b"".join(chunks)))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def event_ids(self) -> set[str]:
        return {json.loads(body)["eventId"] for _, body in self.requests}


def stored_bodies(db: str | Path) -> dict[str, bytes]:
    """Every stored body by eventId, read straight from the database."""
    query = "SELECT event_id, body FROM convhook_inbox"
    if is_postgres(db):
        import psycopg

        with psycopg.connect(str(db)) as pg:
            return {r[0]: bytes(r[1]) for r in pg.execute(query)}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {r[0]: bytes(r[1]) for r in conn.execute(query)}


@pytest.fixture
async def inbox_db(database_url: str, tmp_path: Path) -> str:
    """An inbox database on either engine; PostgreSQL's schema made by `convhook db upgrade`."""
    if is_postgres(database_url):
        code, _, err = await convhook(
            "db", "upgrade", "--db", database_url, "--component", "inbox", cwd=tmp_path
        )
        assert code == 0, err
        return database_url
    return str(tmp_path / "inbox.db")


async def test_listen_accepts_trigger_events_prints_and_stores_them(
    tmp_path: Path, inbox_db: str
) -> None:
    """Events signed by `convhook trigger` are accepted, printed on stdout and stored as done."""
    secret = str(Secret.generate())
    port = free_port()
    db = inbox_db
    async with listener(["--secret", secret, "--db", db], tmp_path, port) as proc:
        code, out, err = await trigger(
            "conversation.completed", port, tmp_path, "--count", "3", "--json", secret=secret
        )
        assert code == 0, err
        assert json.loads(out)["ok"] == 3
        await eventually(lambda: proc.stdout.count("conversation.completed") == 3)
        code, out, _ = await convhook("inbox", "list", "--db", db, "--json", cwd=tmp_path)
    assert code == 0
    listed = json.loads(out)
    assert [e["status"] for e in listed] == ["done"] * 3
    assert all(e["conversationId"].startswith("conv_") for e in listed)
    assert "UNSIGNED" not in proc.stderr
    assert "customer=" in proc.stdout


async def test_listen_without_secret_warns_loudly_and_accepts_unsigned(tmp_path: Path) -> None:
    """Without --secret, start-up warns about unsigned mode and unsigned events are accepted."""
    port = free_port()
    async with listener(["--db", str(tmp_path / "i.db")], tmp_path, port) as proc:
        code, _, err = await trigger("conversation.userJoined", port, tmp_path)
        assert code == 0, err
        await eventually(lambda: "conversation.userJoined" in proc.stdout)
    assert "WARNING" in proc.stderr
    assert "UNSIGNED" in proc.stderr


async def test_failed_forward_is_listed_then_replayed(tmp_path: Path) -> None:
    """A forward that keeps failing is shown as failed with its error; replay delivers it."""
    secret = str(Secret.generate())
    port, target_port = free_port(), free_port()
    db = tmp_path / "inbox.db"
    args = [
        "--secret",
        secret,
        "--db",
        str(db),
        "--forward-to",
        f"http://127.0.0.1:{target_port}/hook",
        "--max-attempts",
        "2",
    ]
    target = Target()
    async with listener(args, tmp_path, port) as proc:
        code, _, err = await trigger("conversation.userLeft", port, tmp_path, secret=secret)
        assert code == 0, err

        async def failed() -> bool:
            _, out, _ = await convhook(
                "inbox", "list", "--status", "failed", "--db", str(db), "--json", cwd=tmp_path
            )
            return bool(json.loads(out))

        await eventually(failed)
        code, table, _ = await convhook("inbox", "list", "--db", str(db), cwd=tmp_path)
        assert code == 0
        assert "failed" in table
        assert "forward" in table
        [event_id] = stored_bodies(db)
        code, shown, _ = await convhook(
            "inbox", "show", event_id, "--db", str(db), "--json", cwd=tmp_path
        )
        assert json.loads(shown)["attempts"] == 2
        assert "forward to" in json.loads(shown)["lastError"]
        assert "forward" in proc.stderr  # the failure is shown by the listener too

        async with serve_app(target, port=target_port):
            code, out, err = await convhook(
                "inbox", "replay", "--failed", "--db", str(db), cwd=tmp_path
            )
            assert code == 0, err
            assert event_id in out
            await eventually(lambda: target.event_ids() == {event_id})
            code, out, err = await convhook(
                "inbox",
                "replay",
                event_id,
                "--forward-to",
                f"http://127.0.0.1:{target_port}/again",
                "--db",
                str(db),
                "--json",
                cwd=tmp_path,
            )
            assert code == 0, err
            assert json.loads(out)[0]["status"] == 200
    assert [body for _, body in target.requests] == [stored_bodies(db)[event_id]] * 2


async def test_sigkill_after_acknowledgement_loses_nothing(tmp_path: Path, inbox_db: str) -> None:
    """Every event acknowledged before a SIGKILL reaches the forward target after a restart
    (on PostgreSQL, when the dead listener's leases end)."""
    secret = str(Secret.generate())
    port, target_port = free_port(), free_port()
    db = inbox_db
    args = ["--secret", secret, "--db", db, "--quiet", "--lease", "2"]
    args += ["--forward-to", f"http://127.0.0.1:{target_port}/hook"]
    proc = cli(["listen", "--port", str(port), *args], tmp_path)
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0, proc.proc)
        code, out, err = await trigger(
            "conversation.analysisCompleted",
            port,
            tmp_path,
            *("--count", "25", "--concurrency", "5", "--json"),
            secret=secret,
        )
        proc.kill()
    finally:
        await asyncio.to_thread(proc.stop)
    assert code == 0, err
    assert json.loads(out)["ok"] == 25
    stored = stored_bodies(db)
    assert len(stored) == 25

    target = Target()
    async with serve_app(target, port=target_port), listener(args, tmp_path, port):
        await eventually(lambda: target.event_ids() == set(stored))
    verifier = Verifier(secret, tolerance=3600)
    for headers, body in target.requests:
        event_id = json.loads(body)["eventId"]
        assert body == stored[event_id]  # byte-identical to what was acknowledged
        assert verifier.verify(headers, body)  # with the original signature


async def test_unmigrated_postgres_and_missing_inbox_fail_clearly(
    tmp_path: Path, pg_url: str
) -> None:
    """A PostgreSQL inbox without its schema is refused naming `convhook db upgrade`, as is
    reading a missing SQLite inbox."""
    code, _, err = await convhook(
        "listen", "--db", pg_url, "--port", str(free_port()), cwd=tmp_path
    )
    assert code == 2
    assert "convhook db upgrade" in err
    code, _, err = await convhook("inbox", "list", "--db", pg_url, cwd=tmp_path)
    assert code == 2
    assert "convhook db upgrade" in err
    code, _, err = await convhook("inbox", "list", "--db", str(tmp_path / "nope.db"), cwd=tmp_path)
    assert code == 2
    assert "no inbox at" in err
    assert not (tmp_path / "nope.db").exists()


async def test_two_listeners_share_one_postgres_inbox(tmp_path: Path, pg_url: str) -> None:
    """Two `convhook listen` processes on one PostgreSQL inbox each accept events, every event
    is forwarded exactly once, and a replay made through either is run by one of them."""
    code, _, err = await convhook(
        "db", "upgrade", "--db", pg_url, "--component", "inbox", cwd=tmp_path
    )
    assert code == 0, err
    secret = str(Secret.generate())
    ports, target_port = [free_port(), free_port()], free_port()
    args = ["--secret", secret, "--db", pg_url, "--quiet"]
    args += ["--forward-to", f"http://127.0.0.1:{target_port}/hook"]
    target = Target()
    async with (
        serve_app(target, port=target_port),
        listener(args, tmp_path, ports[0]),
        listener(args, tmp_path, ports[1]),
    ):
        for port in ports:
            code, out, err = await trigger(
                "conversation.completed", port, tmp_path, "--count", "10", "--json", secret=secret
            )
            assert code == 0, err
            assert json.loads(out)["ok"] == 10
        stored = stored_bodies(pg_url)
        assert len(stored) == 20
        await eventually(lambda: target.event_ids() == set(stored))
        replayed = sorted(stored)[0]
        code, _, err = await convhook("inbox", "replay", replayed, "--db", pg_url, cwd=tmp_path)
        assert code == 0, err
        await eventually(lambda: len(target.requests) == 21)
        await asyncio.sleep(1.5)  # a second poll round of both listeners
    forwarded = [json.loads(body)["eventId"] for _, body in target.requests]
    assert sorted(forwarded) == sorted([*stored, replayed])


async def test_listen_with_a_token_takes_only_requests_that_carry_it(tmp_path: Path) -> None:
    """`listen` with CONVHOOK_WEBHOOK_TOKEN accepts `trigger --token` and refuses a missing or
    wrong token with 401, storing only what it accepted and printing no token."""
    token, wrong = "tok_" + "k" * 32, "tok_" + "w" * 32
    port = free_port()
    db = tmp_path / "inbox.db"
    proc = CLIProcess(
        ["listen", "--port", str(port), "--db", str(db)],
        cwd=tmp_path,
        env={"COLUMNS": "240", "CONVHOOK_WEBHOOK_TOKEN": token},
    )
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0, proc.proc)
        code, out, err = await trigger(
            "conversation.completed", port, tmp_path, "--token", token, "--count", "2", "--json"
        )
        assert code == 0, err
        assert json.loads(out)["ok"] == 2
        code, _, err = await trigger("conversation.completed", port, tmp_path)
        assert code == 1
        assert "401" in err
        code, out, _ = await trigger(
            "conversation.completed", port, tmp_path, "--token", wrong, "--json"
        )
        assert code == 1
        assert json.loads(out)["status"] == 401
        assert "Bearer token does not match" in json.loads(out)["body"]
        await eventually(lambda: proc.stdout.count("conversation.completed") == 2)
    finally:
        await asyncio.to_thread(proc.stop)
    assert len(stored_bodies(db)) == 2
    assert "shared token" in proc.stderr
    assert "UNSIGNED" not in proc.stderr
    assert "webhook token refused" in proc.stderr  # the refusal is logged ...
    assert token not in proc.stderr + proc.stdout
    assert wrong not in proc.stderr + proc.stdout  # ... without the token it got


async def test_listen_with_a_secret_and_a_token_requires_both(tmp_path: Path) -> None:
    """Given --secret and --token, `listen` refuses a signed event without the token and
    accepts one with both."""
    secret, token = str(Secret.generate()), "tok_" + "b" * 32
    port = free_port()
    db = tmp_path / "inbox.db"
    args = ["--secret", secret, "--token", token, "--db", str(db), "--quiet"]
    async with listener(args, tmp_path, port) as proc:
        code, _, err = await trigger("conversation.userJoined", port, tmp_path, secret=secret)
        assert code == 1
        assert "401" in err
        code, _, err = await trigger(
            "conversation.userJoined", port, tmp_path, "--token", token, secret=secret
        )
        assert code == 0, err
    assert len(stored_bodies(db)) == 1
    assert "a valid signature and the shared token" in proc.stderr


@pytest.mark.parametrize("command", ["listen", "trigger"])
async def test_a_token_no_header_can_carry_is_refused_on_the_command_line(
    tmp_path: Path, command: str
) -> None:
    """`listen --token` and `trigger --token` with a space in the token exit 2 with one error
    line that does not repeat it."""
    args = ["--token", "secret words", "--port", str(free_port())]
    if command == "trigger":
        args = ["conversation.userJoined", "--url", "http://127.0.0.1:9/x", "--token", "a b"]
    code, _, err = await convhook(command, *args, cwd=tmp_path)
    assert code == 2
    assert "visible ASCII" in err
    assert "Traceback" not in err
    assert "secret words" not in err
