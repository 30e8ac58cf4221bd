"""Crash safety of the outbox: ``convhook serve`` killed with SIGKILL under load loses no
acknowledged transition and keeps no event without its change, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from convhook.store.producer import ProducerStore
from tests.e2e.test_api_serve import KEY, Api, serve_process, upgrade
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

EVENT_OF = {
    "join": "conversation.userJoined",
    "leave": "conversation.userLeft",
    "end": "conversation.completed",
    "analysis": "conversation.analysisCompleted",
}


async def drive(api: Api, acked: list[tuple[str, str, Any]], stop: asyncio.Event) -> None:
    """Create conversations and walk each through its lifecycle until the server dies."""
    try:
        while not stop.is_set():
            status, conv = await api.post("/api/v2/conversations", {"agentId": "agent_crash"})
            if status != 201:
                return
            acked.append((conv["id"], "create", conv))
            for action in EVENT_OF:
                status, doc = await api.post(f"/api/v2/conversations/{conv['id']}/{action}")
                if status != 200:
                    return
                acked.append((conv["id"], action, doc))
    except (aiohttp.ClientError, ConnectionError):
        return


async def enough(acked: list[Any], count: int) -> None:
    """Return once ``count`` transitions were acknowledged."""
    while len(acked) < count:  # noqa: ASYNC110 - the list is filled by other tasks
        await asyncio.sleep(0.05)


def _rows(conn: Any) -> tuple[list[Any], int]:
    rows = conn.execute(
        "SELECT c.id, c.event_seq, count(e.seq), coalesce(max(e.conversation_seq), 0), "
        "c.body FROM conversations c LEFT JOIN events e ON e.conversation_id = c.id "
        "GROUP BY c.id, c.event_seq, c.body"
    ).fetchall()
    orphans = conn.execute(
        "SELECT count(*) FROM events WHERE conversation_id NOT IN (SELECT id FROM conversations)"
    ).fetchone()[0]
    return [tuple(r) for r in rows], int(orphans)


async def test_sigkill_loses_no_acknowledged_transition(database_url: str, tmp_path: Path) -> None:
    """After SIGKILL and restart, every acknowledged transition has its event (equal to the
    answer), every event's change is in its conversation row, and sequences are gapless."""
    db = database_url
    if db.startswith("postgresql://"):
        upgrade(db)
    port = free_port()
    acked: list[tuple[str, str, Any]] = []
    with serve_process(["serve", "--port", str(port), "--db", db], tmp_path, port) as proc:
        key = KEY.search(proc.stderr)
        assert key, proc.stderr
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            api = Api(session, f"http://127.0.0.1:{port}", key[0])
            workers = [asyncio.create_task(drive(api, acked, stop)) for _ in range(16)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough(acked, 300), 10)
            proc.kill()
            stop.set()
            await asyncio.gather(*workers)
    assert len(acked) >= 100, "the server was killed before it did enough work"

    port = free_port()
    with serve_process(["serve", "--port", str(port), "--db", db], tmp_path, port):
        async with aiohttp.ClientSession() as session:
            api = Api(session, f"http://127.0.0.1:{port}", key[0])
            events = await api.all_pages("/api/v2/events?limit=500")
            by_conv: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for event in events:
                by_conv[event["payload"]["id"]].append(event)
            for conv_id, action, answer in acked:
                if action == "create":
                    continue
                matching = [e for e in by_conv[conv_id] if e["eventType"] == EVENT_OF[action]]
                assert [e["payload"] for e in matching] == [answer]
            for conv_id in {c for c, _, _ in acked}:
                status, conv = await api.get(f"/api/v2/conversations/{conv_id}")
                assert status == 200
                if by_conv[conv_id]:
                    assert conv == by_conv[conv_id][-1]["payload"]
                else:
                    assert conv["conversationStatus"] == "created"

    async with ProducerStore.at(db) as store:
        rows, orphans = await store.db.read(_rows)
    assert orphans == 0
    for conv_id, event_seq, count, top, body in rows:
        assert event_seq == count == top, conv_id
        if count:
            last = by_conv[conv_id][-1]["payload"]
            assert {**json.loads(body), "customer": None} == {**last, "customer": None}
