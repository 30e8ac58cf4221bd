"""Delivery test helpers: a scriptable receiving server and outbox rows written as the API does."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from convhook.ids import new_id
from convhook.samples import sample_event
from convhook.store.delivery import endpoints as endpoint_store
from convhook.store.engine.connection import Connection

LIFECYCLE = (
    "conversation.userJoined",
    "conversation.userLeft",
    "conversation.completed",
    "conversation.analysisCompleted",
)


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, headers, body and an optional delay before answering."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b"Webhook received successfully"
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.body)
        return doc


@dataclass
class Receiver:
    """An ASGI app that records every request and answers from ``script`` (then 200)."""

    script: deque[Reply] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def then(self, *replies: Reply) -> Receiver:
        self.script.extend(replies)
        return self

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` requests arrived."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(scope["path"], headers, body))
        self.arrived.set()
        reply = self.script.popleft() if self.script else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode(), v.encode()) for k, v in reply.headers]
                + [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})


def add_workspace(conn: Connection, workspace_id: str | None = None) -> str:
    """Insert a workspace row and return its id."""
    workspace_id = workspace_id or new_id("ws")
    conn.execute(
        "INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, 0)", (workspace_id, "test")
    )
    return workspace_id


def add_endpoint(
    conn: Connection,
    workspace_id: str,
    url: str,
    secret: str,
    now: int,
    **options: Any,
) -> str:
    """Insert an endpoint (no URL checks, as if created with private targets allowed)."""
    endpoint_id = new_id("ep")
    endpoint_store.create(
        conn,
        endpoint_id=endpoint_id,
        workspace_id=workspace_id,
        url=url,
        secret=secret,
        now=now,
        **options,
    )
    return endpoint_id


def record_event(
    conn: Connection,
    workspace_id: str,
    conversation_id: str,
    conversation_seq: int,
    event_type: str,
    now: int,
) -> tuple[str, bytes]:
    """Insert an outbox row as the producer does; the trigger fans it out. Returns id, body."""
    event = sample_event(event_type, overrides={"id": conversation_id})
    body = event.to_json()
    conn.execute(
        "INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, event_type, "
        "body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            event.event_id,
            workspace_id,
            conversation_id,
            conversation_seq,
            event_type,
            body.decode(),
            now,
        ),
    )
    return event.event_id, body


class FakeClock:
    """A settable clock in epoch seconds."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def loopback_name() -> str | None:
    """A host name other than ``localhost`` that resolves only to loopback here, if any."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        return None
    addresses = {str(info[4][0]) for info in infos}
    if addresses and all(a.startswith("127.") or a == "::1" for a in addresses):
        return name
    return None
