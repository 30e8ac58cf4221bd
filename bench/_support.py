"""What every benchmark needs: free ports, waiting for a server, CPU time of a process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The baseline every receiving benchmark compares with: reads the body, answers the contract.
BARE_APP = """
BODY = b"Webhook received successfully"
HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"29")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Block until ``port`` accepts connections; fail at once if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process (all its threads) and its live children have
    used so far (the dispatcher's SQLite writer is a child process)."""
    # The command name may hold spaces: fields are counted after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        with contextlib.suppress(OSError):  # it exited meanwhile
            own += cpu_seconds(int(child))
    return own


def serve_command(port: int, db: str) -> list[str]:
    """``convhook serve`` on 127.0.0.1:``port`` with ``db``; the active-conversation limit is
    lifted so the load generators never hit it."""
    return [
        sys.executable,
        *("-m", "convhook", "serve", "--port", str(port), "--db", db),
        *("--max-active", "1000000"),
    ]


@contextlib.contextmanager
def postgres_server() -> Iterator[Any]:
    """A throwaway durable PostgreSQL server (the test harness's), for ``--db postgres``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.postgres import TemporaryPostgres

    with TemporaryPostgres(durable=True) as server:
        yield server


def migrated_database(server: Any, name: str, component: str) -> str:
    """A new database ``name`` on ``server`` with ``component``'s schema; its URL."""
    url: str = server.create_database(name)
    upgrade = ["db", "upgrade", "--db", url, "--component", component]
    subprocess.run([sys.executable, "-m", "convhook", *upgrade], check=True, capture_output=True)
    return url
