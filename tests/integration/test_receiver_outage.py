"""The receiver across a PostgreSQL restart: refuses what it cannot store, then carries on."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp

from convhook.errors import StoreError
from convhook.receiver import HandlerStatus, Receiver, RetryPolicy
from convhook.samples import sample_event
from convhook.signing import Secret, sign
from tests.support.inbox import inbox_at
from tests.support.postgres import TemporaryPostgres
from tests.support.servers import serve_app

SECRET = Secret.generate()


async def post(session: aiohttp.ClientSession, url: str, event_id: str, body: bytes) -> int:
    headers = {"content-type": "application/json", **sign([SECRET], event_id, body)}
    async with session.post(url, data=body, headers=headers) as r:
        await r.read()
        return r.status


async def test_postgres_restart_while_events_arrive() -> None:
    """During a PostgreSQL restart requests get 503 (only stored events get 200); afterwards
    the receiver reconnects, accepts again and runs every acknowledged event's handlers."""
    handled: set[str] = set()
    events = [sample_event("conversation.userJoined") for _ in range(400)]
    statuses: dict[str, list[int]] = {e.event_id: [] for e in events}
    with TemporaryPostgres() as server:
        inbox = inbox_at(server.create_database("inbox"))
        receiver = Receiver(
            [SECRET],
            inbox,
            poll_interval=0.05,
            lease=1.0,
            retry=RetryPolicy.exponential(max_attempts=10, base=0.05, jitter_ratio=0.0),
        )

        @receiver.on_any
        async def record(event: Any) -> None:
            handled.add(event.event_id)

        async with serve_app(receiver.asgi_app()) as base, aiohttp.ClientSession() as session:
            url = base + "/webhook"
            restart: asyncio.Task[None] | None = None
            for n, event in enumerate(events):
                if n == 50:
                    restart = asyncio.create_task(asyncio.to_thread(server.restart))
                if n > 50 and restart is not None and restart.done() and n % 50 == 0:
                    break
                statuses[event.event_id].append(
                    await post(session, url, event.event_id, event.to_json())
                )
            assert restart is not None
            await restart
            sent = [e for e in events if statuses[e.event_id]]
            refused = [e for e in sent if statuses[e.event_id] == [503]]
            assert refused, "no request was made while the database was unreachable"
            assert {s for e in sent for s in statuses[e.event_id]} == {200, 503}
            # A sender retries what was refused; the receiver has reconnected by then.
            for event in refused:
                deadline = time.monotonic() + 15
                while statuses[event.event_id][-1] != 200 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    status = await post(session, url, event.event_id, event.to_json())
                    statuses[event.event_id].append(status)
                assert statuses[event.event_id][-1] == 200
            ids = [e.event_id for e in sent]
            deadline = time.monotonic() + 30
            pending = set(ids)
            while pending and time.monotonic() < deadline:
                for event_id in list(pending):
                    with contextlib.suppress(StoreError):
                        entry = await receiver.inbox.get(event_id)
                        if entry is not None and entry.status is HandlerStatus.DONE:
                            pending.discard(event_id)
                await asyncio.sleep(0.1)
            assert not pending, f"{len(pending)} acknowledged events never handled"
    assert handled >= set(ids)
