"""``convhook events list`` with operational events (``endpoint.*``, ``delivery.failed``), as
real subprocesses against a real ``convhook serve`` on SQLite: their subject is shown as the
endpoint, their type filters on the server, and they have colours of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_api_serve import KEY, serve_process
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

RED = "\x1b[31m"
"""How rich starts red text (``endpoint.disabled``)."""


@dataclass
class Served:
    """A ``convhook serve`` whose workspace has a joined conversation and an endpoint that
    was disabled then enabled."""

    url: str
    key: str
    db: str
    endpoint: str
    conversation: str
    home: Path

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``convhook ARGS`` at 200 columns, with no profile and no ``CONVHOOK_*`` variable."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONVHOOK_")}
        return subprocess.run(
            [sys.executable, "-m", "convhook", *args],
            capture_output=True,
            text=True,
            env={**base, "XDG_CONFIG_HOME": str(self.home), "COLUMNS": "200", **(env or {})},
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    def remote(self, *args: str, env: dict[str, str] | None = None) -> str:
        """The standard output of ``convhook ARGS`` asking this server; it must succeed."""
        done = self.cli(*args, "--api-url", self.url, "--api-key", self.key, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module, its events recorded through the API."""
    tmp = tmp_path_factory.mktemp("operational-cli")
    port = free_port()
    db = str(tmp / "api.db")
    args = ["serve", "--port", str(port), "--db", db, "--allow-private-targets", "--no-dispatch"]
    with serve_process(args, tmp, port) as proc:
        match = KEY.search(proc.stderr)
        assert match, proc.stderr
        url, key = f"http://127.0.0.1:{port}", match[0]

        def post(path: str, doc: Any = None) -> Any:
            data = None if doc is None else json.dumps(doc).encode()
            request = urllib.request.Request(
                url + path,
                data=data if data is not None else b"",
                method="POST",
                headers={"x-api-key": key, "content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as r:
                assert r.status in (200, 201)
                return json.loads(r.read())

        endpoint = post("/api/v2/endpoints", {"url": "http://127.0.0.1:9/hook"})["id"]
        conversation = post("/api/v2/conversations", {"agentId": "agent-ops"})["id"]
        post(f"/api/v2/conversations/{conversation}/join")
        post(f"/api/v2/endpoints/{endpoint}/disable")
        post(f"/api/v2/endpoints/{endpoint}/enable")
        yield Served(url, key, db, endpoint, conversation, tmp / "config")


def _line(stdout: str, event_type: str) -> str:
    [line] = [line for line in stdout.splitlines() if event_type in line]
    return line


def test_the_table_names_the_endpoint_as_an_operational_events_subject(served: Served) -> None:
    """From a server, the table's subject is the conversation's id for a conversation event
    and ``endpoint <id>`` for an operational one, never empty."""
    stdout = served.remote("events", "list")
    assert "subject" in _line(stdout, "event id"), stdout
    assert served.conversation in _line(stdout, "userJoined")
    for kind in ("endpoint.disabled", "endpoint.enabled"):
        assert f"endpoint {served.endpoint}" in _line(stdout, kind), stdout


def test_the_type_filter_takes_an_operational_type(served: Served) -> None:
    """``events list --type endpoint.disabled`` asks the server for that type only."""
    page = json.loads(served.remote("events", "list", "--type", "endpoint.disabled", "--json"))
    assert [e["eventType"] for e in page["data"]] == ["endpoint.disabled"]
    assert page["data"][0]["payload"]["endpointId"] == served.endpoint
    stdout = served.remote("events", "list", "--type", "endpoint.enabled")
    assert f"endpoint {served.endpoint}" in _line(stdout, "endpoint.enabled")
    assert "endpoint.disabled" not in stdout


def test_operational_types_are_coloured_in_both_forms(served: Served) -> None:
    """In a colour terminal ``endpoint.disabled`` is red in the server's table and in the
    database's lines (the colours ``events tail --db`` prints too)."""
    colour = {"FORCE_COLOR": "1", "TERM": "xterm-256color"}
    table = served.remote("events", "list", env=colour)
    assert RED + "endpoint.disabled" in table, table
    lines = served.cli("events", "list", "--db", served.db, env=colour)
    assert lines.returncode == 0, lines.stderr
    assert RED + "endpoint.disabled" in lines.stdout, lines.stdout
    assert served.endpoint in _line(lines.stdout, "endpoint.disabled")
