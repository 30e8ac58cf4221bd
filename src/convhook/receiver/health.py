"""``/healthz`` and ``/readyz`` for a receiver, with the bodies ``convhook serve`` answers.

``/healthz`` answers 200 while the process runs. ``/readyz`` answers 200 when the inbox
database answers a read within :data:`READY_TIMEOUT` seconds, its inbox schema is the version
this code ships, and the receiver's worker loop runs; 503 otherwise, naming the failed check
and nothing else (a driver's error names the server, so a probe never shows it). Neither
needs a signature or a token.

This module imports nothing beyond the receiver's own dependencies: the producer side's
:mod:`convhook.metrics` needs ``prometheus_client``, which a receiver does not install.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from convhook.errors import ConvhookError
from convhook.receiver.replies import Reply
from convhook.store.engine.migrations import installed, latest, load
from convhook.store.inbox.store import DatabaseInbox

if TYPE_CHECKING:
    from convhook.receiver.receiver import Receiver

READY_TIMEOUT = 2.0
"""Seconds a readiness check waits for the inbox (a hung server is not ready)."""

OK = "ok"
PATHS = ("/healthz", "/readyz")
"""The paths a receiver's ASGI app answers GETs on, below its mount point."""

_JSON = "application/json"
ALIVE = Reply(200, _JSON, b'{"status": "alive"}')
"""The answer of ``/healthz``."""


@dataclass(frozen=True)
class Readiness:
    """The outcome of each readiness check: ``ok``, or a short reason without data."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        """Whether every check passed."""
        return all(v == OK for v in self.checks.values())

    @property
    def status(self) -> int:
        """The HTTP status ``/readyz`` answers: 200 or 503."""
        return 200 if self.ready else 503

    def body(self) -> bytes:
        """``{"status": "ready" | "unavailable", "checks": {name: outcome}}``."""
        status = "ready" if self.ready else "unavailable"
        return json.dumps({"status": status, "checks": self.checks}).encode()

    def reply(self) -> Reply:
        """The ``/readyz`` answer."""
        return Reply(self.status, _JSON, self.body())


@functools.cache
def shipped_version(dialect: str) -> int:
    """The inbox schema version this code ships for ``dialect``."""
    return latest(load(dialect, "inbox")).get("inbox", 0)


async def readiness(receiver: Receiver, *, timeout: float = READY_TIMEOUT) -> Readiness:
    """Check the receiver's inbox (a read within ``timeout`` seconds, and its schema
    version) and its worker loop."""
    if not receiver.started:
        return Readiness({"database": "not open", "schema": "unknown", "worker": "not running"})
    checks: dict[str, str] = {}
    inbox = receiver.inbox
    try:
        if isinstance(inbox, DatabaseInbox):
            found = await asyncio.wait_for(inbox.db.read(installed, "inbox"), timeout)
        else:
            # Another Inbox implementation has no schema of ours: a read is all to check.
            await asyncio.wait_for(inbox.next_due(), timeout)
            found = None
    except (ConvhookError, TimeoutError, OSError):
        checks["database"] = "unreachable"
        checks["schema"] = "unknown"
    else:
        checks["database"] = OK
        if isinstance(inbox, DatabaseInbox):
            known = shipped_version(inbox.db.dialect.name)
            checks["schema"] = OK if found == known else f"version {found}, this code needs {known}"
    checks["worker"] = receiver.worker.state()
    return Readiness(checks)
