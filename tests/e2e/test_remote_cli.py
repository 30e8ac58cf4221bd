"""The commands that drive a server through its API (login, endpoints, events, deliveries) as
real subprocesses against a real ``convhook serve`` on SQLite, delivering to a real receiver;
``events tail`` against a small server-sent-events server too (drops, resumes, filters)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from convhook.cli.remote import Message, SseParser
from tests.e2e.test_api_serve import KEY, serve_process
from tests.support.delivery import Receiver, Reply
from tests.support.servers import eventually, free_port, serve_app

pytestmark = pytest.mark.slow


@dataclass
class Served:
    """A running ``convhook serve`` and its workspace key."""

    url: str
    key: str
    db: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``convhook serve`` (SQLite, delivering to loopback receivers) for the module."""
    tmp = tmp_path_factory.mktemp("remote")
    port = free_port()
    db = str(tmp / "api.db")
    args = ["serve", "--port", str(port), "--db", db, "--allow-private-targets"]
    with serve_process(args, tmp, port) as proc:
        match = KEY.search(proc.stderr)
        assert match, proc.stderr
        yield Served(f"http://127.0.0.1:{port}", match[0], db)


@dataclass
class Cli:
    """Runs ``convhook`` with its own config directory (profiles) and a fixed width."""

    home: Path

    async def __call__(
        self, *args: str, env: dict[str, str] | None = None, columns: int = 100
    ) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONVHOOK_")}
        full = {**base, "XDG_CONFIG_HOME": str(self.home), "COLUMNS": str(columns), **(env or {})}
        # In a thread: the receivers run on this event loop and must answer meanwhile.
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "convhook", *args],
            capture_output=True,
            text=True,
            env=full,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    async def json(self, *args: str, **kw: Any) -> Any:
        done = await self(*args, "--json", **kw)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A CLI runner with an empty profile directory."""
    return Cli(tmp_path / "config")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    """A receiving server (200 unless scripted) and its hook URL."""
    app = Receiver()
    async with serve_app(app) as base:
        yield app, base + "/hooks"


def flags(s: Served) -> list[str]:
    return ["--api-url", s.url, "--api-key", s.key]


async def new_conversation(s: Served) -> tuple[str, str]:
    """Create a conversation and join it through the API: its id and the userJoined event id."""
    headers = {"x-api-key": s.key}
    async with aiohttp.ClientSession(headers=headers) as http:
        body = {"agentId": "agent_cli", "toPhoneNumber": "+14155550101"}
        async with http.post(s.url + "/api/v2/conversations", json=body) as r:
            assert r.status == 201, await r.text()
            conversation = (await r.json())["id"]
        async with http.post(f"{s.url}/api/v2/conversations/{conversation}/join") as r:
            assert r.status == 200, await r.text()
        params = {"conversationId": conversation}
        async with http.get(s.url + "/api/v2/events", params=params) as r:
            [event] = (await r.json())["data"]
    return conversation, event["eventId"]


async def test_login_saves_a_private_profile_and_flags_beat_env_beat_profile(
    served: Served, cli: Cli
) -> None:
    """login checks the key and saves it 0600; flags beat CONVHOOK_API_* beat the profile;
    a profile's key is never sent to another URL; logout removes it."""
    refused = await cli("login", "--api-url", served.url, "--api-key", "chk_wrong")
    assert refused.returncode == 1
    assert "401" in refused.stderr
    assert not (cli.home / "convhook" / "profiles.json").exists()

    saved = await cli("login", "--api-url", served.url + "/", "--api-key", served.key)
    assert saved.returncode == 0, saved.stderr
    path = cli.home / "convhook" / "profiles.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["profiles"]["default"]["apiUrl"] == served.url

    assert "data" in await cli.json("endpoints", "list")
    wrong_env = {"CONVHOOK_API_KEY": "chk_wrong"}
    env_wins = await cli("endpoints", "list", env=wrong_env)
    assert env_wins.returncode == 1
    assert "401" in env_wins.stderr
    assert "data" in await cli.json("endpoints", "list", "--api-key", served.key, env=wrong_env)

    elsewhere = await cli("endpoints", "list", "--api-url", "http://127.0.0.1:9")
    assert elsewhere.returncode == 2
    assert "no API key for http://127.0.0.1:9" in elsewhere.stderr
    missing = await cli("endpoints", "list", "--profile", "staging")
    assert missing.returncode == 2
    assert "no profile 'staging'" in missing.stderr

    assert (await cli("logout")).returncode == 0
    gone = await cli("endpoints", "list")
    assert gone.returncode == 2
    assert "no API URL" in gone.stderr
    assert (await cli("logout")).returncode == 1


async def test_errors_are_one_line_with_the_api_message(served: Served, cli: Cli) -> None:
    """A refused request exits 1 with the API's message and problems on one line; an
    unreachable server exits 1 naming the URL; a bad URL exits 2."""
    bad = await cli(
        "endpoints", "create", "http://127.0.0.1:9/h", "--max-in-flight", "0", *flags(served)
    )
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1
    assert "HTTP 422" in bad.stderr
    assert "maxInFlight" in bad.stderr
    absent = await cli("endpoints", "show", "ep_nope", *flags(served))
    assert absent.returncode == 1
    assert "no endpoint 'ep_nope'" in absent.stderr
    port = free_port()
    down = await cli("endpoints", "list", "--api-url", f"http://127.0.0.1:{port}", "--api-key", "k")
    assert down.returncode == 1
    assert f"cannot reach http://127.0.0.1:{port} (Connection refused)" in down.stderr
    scheme = await cli("endpoints", "list", "--api-url", "127.0.0.1:8080", "--api-key", "k")
    assert scheme.returncode == 2
    assert "http:// or https://" in scheme.stderr


async def test_endpoint_lifecycle(served: Served, cli: Cli, receiver: tuple[Receiver, str]) -> None:
    """create shows the secret once, show/list never; update, disable, enable, rotate-secret,
    test (delivered to the receiver), recover and delete act on the server."""
    app, hook = receiver
    f = flags(served)
    created = await cli.json("endpoints", "create", hook, "--description", "cli", *f)
    ep = created["id"]
    assert created["secret"].startswith("whsec_")
    assert created["enabled"] is True
    shown = await cli.json("endpoints", "show", ep, *f)
    assert "secret" not in shown
    assert shown["url"] == hook
    listed = await cli.json("endpoints", "list", "--all", "--limit", "1", *f)
    assert ep in [e["id"] for e in listed["data"]]
    assert listed["nextCursor"] is None

    types = ("--event-type", "conversation.completed", "--event-type", "conversation.userLeft")
    updated = await cli.json("endpoints", "update", ep, *types, "--rate-limit", "50", *f)
    assert updated["eventTypes"] == ["conversation.completed", "conversation.userLeft"]
    assert updated["rateLimit"] == 50
    again = await cli.json("endpoints", "update", ep, "--all-event-types", "--no-rate-limit", *f)
    assert again["eventTypes"] is None
    assert again["rateLimit"] is None
    nothing = await cli("endpoints", "update", ep, *f)
    assert nothing.returncode == 2

    assert (await cli.json("endpoints", "disable", ep, *f))["enabled"] is False
    refused = await cli("endpoints", "test", ep, *f)
    assert refused.returncode == 1
    assert "disabled" in refused.stderr
    assert (await cli.json("endpoints", "enable", ep, *f))["enabled"] is True

    rotated = await cli.json("endpoints", "rotate-secret", ep, "--grace-hours", "1", *f)
    assert rotated["secret"] != created["secret"]
    assert rotated["previousSecretExpiresAt"]

    queued = await cli.json("endpoints", "test", ep, *f)
    assert queued["deliveryId"].startswith("dlv_")
    await app.wait_for(1)
    assert app.received[0].event["eventId"] == queued["eventId"]

    async def delivered() -> bool:
        doc = await cli.json("deliveries", "show", queued["deliveryId"], *f)
        return bool(doc["status"] == "delivered")

    await eventually(delivered)
    text = await cli("deliveries", "show", queued["deliveryId"], *f)
    assert "attempt 1" in text.stdout
    assert "200" in text.stdout

    recovered = await cli.json("endpoints", "recover", ep, "--since", "2020-01-01T00:00:00Z", *f)
    assert recovered == {"queued": 0}

    unasked = await cli("endpoints", "delete", ep, *f)
    assert unasked.returncode == 2
    assert "--yes" in unasked.stderr
    assert (await cli("endpoints", "delete", ep, "--yes", *f)).returncode == 0
    assert (await cli("endpoints", "show", ep, *f)).returncode == 1


async def test_events_and_deliveries(
    served: Served, cli: Cli, receiver: tuple[Receiver, str]
) -> None:
    """events list filters and pages, show prints the event as endpoints get it, resend and
    deliveries retry send it again, deliveries list shows an event's and an endpoint's."""
    app, hook = receiver
    f = flags(served)
    ep = (await cli.json("endpoints", "create", hook, *f))["id"]
    conversation, event_id = await new_conversation(served)
    listed = await cli.json("events", "list", "--conversation", conversation, *f)
    assert [e["eventId"] for e in listed["data"]] == [event_id]
    typed = await cli.json(
        "events", "list", "--type", "conversation.userJoined", "--all", "--limit", "1", *f
    )
    assert event_id in [e["eventId"] for e in typed["data"]]
    assert typed["nextCursor"] is None
    assert {e["eventType"] for e in typed["data"]} == {"conversation.userJoined"}

    shown = await cli.json("events", "show", event_id, *f)
    await app.wait_for(1)
    assert shown == app.received[0].event
    of_event = await cli.json("deliveries", "list", "--event", event_id, *f)
    [delivery] = [d for d in of_event["data"] if d["endpointId"] == ep]

    async def delivered() -> bool:
        doc = await cli.json("deliveries", "show", delivery["id"], *f)
        return bool(doc["status"] == "delivered")

    await eventually(delivered)
    retried = await cli.json("deliveries", "retry", delivery["id"], *f)
    assert retried == {"queued": 1, "eventId": event_id, "endpointId": ep}
    resent = await cli.json("events", "resend", event_id, "--endpoint", ep, *f)
    assert resent == {"queued": 1}
    await app.wait_for(3)
    assert [r.event["eventId"] for r in app.received] == [event_id] * 3
    # A redelivery sends the same delivery again: one delivery, three attempts.
    of_endpoint = await cli.json("deliveries", "list", "--endpoint", ep, "--all", *f)
    assert [d["id"] for d in of_endpoint["data"]] == [delivery["id"]]
    text = await cli("events", "show", event_id, *f)
    assert event_id in text.stdout
    assert "deliveries" in text.stdout
    usage = await cli("deliveries", "list", *f)
    assert usage.returncode == 2


async def test_tables_fit_the_terminal_without_breaking_ids(
    served: Served, cli: Cli, receiver: tuple[Receiver, str]
) -> None:
    """At 80 columns every table line fits and every id is whole; at 40 they still fit
    (ids folded, never cut)."""
    app, hook = receiver
    app.then(Reply(500, body=b"[bold]not markup[/] " + b"x" * 300))
    f = flags(served)
    ep = (await cli.json("endpoints", "create", hook + "/" + "long" * 20, *f))["id"]
    _, event_id = await new_conversation(served)
    await app.wait_for(1)

    async def failed_once() -> bool:
        doc = await cli.json("deliveries", "list", "--endpoint", ep, *f)
        return bool(doc["data"] and doc["data"][0]["attempts"] >= 1)

    await eventually(failed_once)
    deliveries = (await cli.json("deliveries", "list", "--endpoint", ep, *f))["data"]
    whole = {
        "endpoints": [ep],
        "events": [event_id],
        "deliveries": [event_id, deliveries[0]["id"]],
    }
    for columns in (80, 40):
        for args in (
            ("endpoints", "list"),
            ("events", "list", "--limit", "500"),
            ("deliveries", "list", "--endpoint", ep),
        ):
            done = await cli(*args, *f, columns=columns)
            assert done.returncode == 0, done.stderr
            assert max(len(line) for line in done.stdout.splitlines()) <= columns, done.stdout
            if columns == 80:
                for wanted in whole[args[0]]:
                    assert wanted in done.stdout, done.stdout
    # The receiver's answer is shown as it came, brackets and all (not read as markup).
    shown = await cli("deliveries", "show", deliveries[0]["id"], *f, columns=200)
    assert "answer: [bold]not markup[/] xxx" in shown.stdout, shown.stdout


async def test_events_read_the_database_or_the_server(served: Served, cli: Cli) -> None:
    """events list reads --db when given on the command line, the server when an API URL is
    configured (flag, environment or profile), and refuses both flags at once or a profile
    that does not exist."""
    _, event_id = await new_conversation(served)
    both = await cli("events", "list", "--db", served.db, *flags(served))
    assert both.returncode == 2
    assert "not both" in both.stderr
    assert (await cli("login", *flags(served))).returncode == 0
    local = await cli("events", "list", "--db", served.db, "--json", "--limit", "500")
    assert local.returncode == 0, local.stderr
    assert event_id in [json.loads(line)["eventId"] for line in local.stdout.splitlines()]
    remote = await cli.json("events", "list", "--limit", "500")
    assert event_id in [e["eventId"] for e in remote["data"]]
    env = {"CONVHOOK_DATABASE_URL": served.db, "CONVHOOK_API_URL": served.url}
    env_remote = await cli.json("events", "list", "--limit", "500", env=env)
    assert "data" in env_remote
    missing = await cli("events", "list", "--profile", "staging")
    assert missing.returncode == 2
    assert "no profile 'staging'" in missing.stderr
    wrong = await cli("events", "list", "--workspace", "ws_x")
    assert wrong.returncode == 2
    assert "--workspace only applies to --db" in wrong.stderr
    local_only = await cli("events", "list", "--db", served.db, "--type", "x")
    assert local_only.returncode == 2
    assert "--type only applies to a server" in local_only.stderr
    # Set in the environment, an option of the other form is meant for it: no error.
    other_form = await cli.json("events", "list", env={"CONVHOOK_WORKSPACE": "ws_x"})
    assert "data" in other_form


# --- events tail over the stream --------------------------------------------------------


def test_sse_parser_reads_any_chunking_and_line_ending() -> None:
    """Messages split anywhere, with CRLF, LF or CR line ends, comments and multi-line data,
    come out whole; the id persists for Last-Event-ID and retry is read."""
    wire = (
        b': ping\r\n\r\nretry: 250\nid: 1.0\nevent: event\ndata: {"a":\ndata: 1}\n\n'
        b"id: 1.7\revent: attempt\rdata: {}\r\r: ping\n\ndata: plain\n\n"
    )
    for size in (1, 2, 3, 7, len(wire)):
        parser = SseParser()
        got: list[Message] = []
        for i in range(0, len(wire), size):
            got.extend(parser.feed(wire[i : i + size]))
        assert got == [
            Message("event", '{"a":\n1}', "1.0"),
            Message("attempt", "{}", "1.7"),
            Message("message", "plain", "1.7"),
        ], size
        assert parser.last_id == "1.7"
        assert parser.retry_ms == 250


@dataclass
class FakeStream:
    """``/api/v2/stream`` as the contract says: records each request, plays one script per
    connection (a script ends by closing, or holds the connection open)."""

    scripts: list[list[bytes]]
    requests: list[tuple[dict[str, str], str | None, str | None]]
    status: int = 200

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            (
                dict(request.query),
                request.headers.get("last-event-id"),
                request.headers.get("x-api-key"),
            )
        )
        if self.status != 200:
            body = json.dumps({"error": "the API key is not valid", "problems": []})
            return web.Response(status=self.status, text=body, content_type="application/json")
        script = self.scripts.pop(0) if self.scripts else [b"HOLD"]
        if script and script[0].startswith(b"STATUS "):
            # A connection refused with this status (and the API's error shape).
            body = json.dumps({"error": "Last-Event-ID: is ahead of this stream", "problems": []})
            status = int(script[0].split()[1])
            return web.Response(status=status, text=body, content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for chunk in script:
            if chunk == b"HOLD":
                await asyncio.sleep(3600)
            await response.write(chunk)
            await asyncio.sleep(0.05)
        return response


@contextlib.asynccontextmanager
async def fake_stream(stream: FakeStream) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/api/v2/stream", stream.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def sse_message(kind: str, ident: str, data: dict[str, Any]) -> bytes:
    return f"id: {ident}\r\nevent: {kind}\r\ndata: {json.dumps(data)}\r\n\r\n".encode()


EVENT = {
    "eventId": "evt_1",
    "eventType": "conversation.userJoined",
    "conversationId": "conv_1",
    "sequence": 1,
    "createdAt": "2026-01-01T00:00:00.000Z",
    "event": {},
}
ATTEMPT = {
    "deliveryId": "dlv_1",
    "eventId": "evt_1",
    "eventType": "conversation.userJoined",
    "endpointId": "ep_1",
    "conversationId": "conv_1",
    "attempt": 1,
    "attemptedAt": "2026-01-01T00:00:00.100Z",
    "statusCode": 200,
    "latencyMs": 12.5,
    "outcome": "delivered",
    "error": None,
}


@dataclass
class Tail:
    """A running ``convhook events tail``; ``stderr`` is filled once it stopped."""

    proc: asyncio.subprocess.Process
    stderr: str = ""


@contextlib.asynccontextmanager
async def tail(cli: Cli, url: str, *args: str) -> AsyncIterator[Tail]:
    """``convhook events tail --json`` against ``url``, stopped after the block."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVHOOK_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "convhook",
        "events",
        "tail",
        "--api-url",
        url,
        "--api-key",
        "chk_k",
        "--json",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**env, "XDG_CONFIG_HOME": str(cli.home), "PYTHONUNBUFFERED": "1"},
    )
    running = Tail(proc)
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
        running.stderr = stderr.decode()


async def read_line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line, "events tail stopped"
    doc: dict[str, Any] = json.loads(line)
    return doc


async def test_tail_prints_the_stream_in_order_and_resumes_after_a_drop(cli: Cli) -> None:
    """Events and attempts print as NDJSON in stream order; --from-start asks for since=start;
    when the connection drops, tail reconnects with Last-Event-ID and the filters, and goes on
    without repeating."""
    first = [
        b": ping\n\n",
        sse_message("event", "1.0", EVENT)[:20],
        sse_message("event", "1.0", EVENT)[20:],
        sse_message("attempt", "1.1", ATTEMPT),
        b"event: somethingNew\ndata: {}\n\n",
    ]
    second = [sse_message("event", "2.0", {**EVENT, "eventId": "evt_2", "sequence": 2}), b"HOLD"]
    stream = FakeStream([first, second], [])
    async with fake_stream(stream) as url:
        filters = ("--type", "conversation.userJoined", "--endpoint", "ep_1", "--from-start")
        async with tail(cli, url, *filters) as running:
            assert await read_line(running.proc) == {"kind": "event", **EVENT}
            assert await read_line(running.proc) == {"kind": "attempt", **ATTEMPT}
            assert (await read_line(running.proc))["eventId"] == "evt_2"
    query = {"eventType": "conversation.userJoined", "endpointId": "ep_1", "since": "start"}
    assert stream.requests[0] == (query, None, "chk_k")
    assert stream.requests[1] == (query, "1.1", "chk_k")
    assert len(stream.requests) == 2
    assert "following events and delivery attempts" in running.stderr
    assert "stream lost" in running.stderr
    assert "reconnected" in running.stderr


async def test_tail_follows_from_now_when_the_server_no_longer_has_its_last_message(
    cli: Cli,
) -> None:
    """A reconnect refused with 400 (the server's logs end before the last message shown: its
    database was replaced) is not the end of tail: it says so and follows from now."""
    first = [sse_message("event", "5.0", EVENT)]
    again = [sse_message("event", "1.0", {**EVENT, "eventId": "evt_2"}), b"HOLD"]
    stream = FakeStream([first, [b"STATUS 400"], again], [])
    async with fake_stream(stream) as url, tail(cli, url, "--from-start") as running:
        assert (await read_line(running.proc))["eventId"] == EVENT["eventId"]
        assert (await read_line(running.proc))["eventId"] == "evt_2"
    # From now: neither the last id nor --from-start's since=start is sent again.
    assert [(query, last) for query, last, _ in stream.requests] == [
        ({"since": "start"}, None),
        ({"since": "start"}, "5.0"),
        ({}, None),
    ]
    assert "no message 5.0 any more" in running.stderr


async def test_tail_says_why_it_cannot_follow(cli: Cli) -> None:
    """A refused stream exits 1 with the API's message, a server without the stream exits 1
    saying so, and no server at all exits 1 naming the URL."""
    async with fake_stream(FakeStream([], [], status=401)) as url, tail(cli, url) as refused:
        await asyncio.wait_for(refused.proc.wait(), 20)
    assert refused.proc.returncode == 1
    assert "the API key is not valid" in refused.stderr
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with tail(cli, f"http://127.0.0.1:{port}") as old:
            await asyncio.wait_for(old.proc.wait(), 20)
    finally:
        await runner.cleanup()
    assert old.proc.returncode == 1
    assert "has no stream" in old.stderr
    async with tail(cli, f"http://127.0.0.1:{free_port()}") as nobody:
        await asyncio.wait_for(nobody.proc.wait(), 20)
    assert nobody.proc.returncode == 1
    assert "cannot reach" in nobody.stderr


async def test_tail_follows_a_real_server(served: Served, cli: Cli) -> None:
    """Against ``convhook serve``, tail prints the event a new conversation records, and
    with --from-start the events recorded before it started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVHOOK_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "convhook",
        "events",
        "tail",
        *flags(served),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**env, "XDG_CONFIG_HOME": str(cli.home), "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        header = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert b"following" in header
        conversation, event_id = await new_conversation(served)
        while True:
            doc = await read_line(proc)
            if doc["kind"] == "event" and doc["eventId"] == event_id:
                assert doc["conversationId"] == conversation
                break
    finally:
        proc.terminate()
        await proc.communicate()
    # Later, --from-start shows it again: what was recorded comes first.
    filters = ("--from-start", "--conversation", conversation)
    async with tail(cli, served.url, *filters, "--api-key", served.key) as again:
        doc = await read_line(again.proc)
    assert doc["kind"] == "event"
    assert doc["eventId"] == event_id


async def test_a_redirect_is_not_followed_with_the_key(cli: Cli) -> None:
    """A server that redirects is an error naming the target, and the key never reaches it."""
    seen: list[str | None] = []

    async def target(request: web.Request) -> web.Response:
        seen.append(request.headers.get("x-api-key"))
        return web.json_response({"data": [], "nextCursor": None})

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://localhost:{port}/elsewhere{request.path}")

    app = web.Application()
    app.router.add_get("/api/v2/{tail:.*}", moved)
    app.router.add_get("/elsewhere/{tail:.*}", target)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}"
        listed = await cli("endpoints", "list", "--api-url", url, "--api-key", "chk_k")
        async with tail(cli, url) as followed:
            await asyncio.wait_for(followed.proc.wait(), 20)
    finally:
        await runner.cleanup()
    assert listed.returncode == 1
    assert f"redirects (307) to http://localhost:{port}/elsewhere" in listed.stderr
    assert followed.proc.returncode == 1
    assert "redirects (307)" in followed.stderr
    assert seen == []


async def test_tail_resumes_across_a_server_restart(tmp_path: Path, cli: Cli) -> None:
    """When ``convhook serve`` restarts, tail reconnects on its own and prints the events
    recorded after the restart once, without repeating those it showed."""
    port = free_port()
    args = ["serve", "--port", str(port), "--db", str(tmp_path / "api.db"), "--no-dispatch"]
    with serve_process(args, tmp_path, port) as first:
        match = KEY.search(first.stderr)
        assert match, first.stderr
        served = Served(f"http://127.0.0.1:{port}", match[0], str(tmp_path / "api.db"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVHOOK_")}
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "convhook", "events", "tail", *flags(served), "--json"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**env, "XDG_CONFIG_HOME": str(cli.home), "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert proc.stderr is not None
            assert b"following" in await asyncio.wait_for(proc.stderr.readline(), 20)
            _, before = await new_conversation(served)
            assert (await read_line(proc))["eventId"] == before
            first.stop()
            with serve_process(args, tmp_path, port):
                _, after = await new_conversation(served)
                doc = await read_line(proc)
                assert doc["eventId"] == after
                assert doc["kind"] == "event"
        finally:
            proc.terminate()
            _, stderr = await proc.communicate()
    assert b"reconnected" in stderr
