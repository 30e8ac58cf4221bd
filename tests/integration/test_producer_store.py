"""The producer store shared by several processes (two stores on one database): concurrent
transitions of one conversation keep one event per success, in order; on both engines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from convhook.lifecycle import Action, TransitionError
from convhook.outbox import Outbox
from convhook.store.producer import ProducerStore


async def test_two_stores_racing_on_one_conversation(database_url: str) -> None:
    """Transitions raced through two independent stores (as two API processes would) each
    either win with exactly one event or are refused; the row equals its last event."""
    async with (
        ProducerStore.at(database_url, auto_upgrade=True) as first,
        ProducerStore.at(database_url) as second,
    ):
        workspace, _ = await first.create_workspace("w")
        outboxes = [Outbox(first), Outbox(second)]
        [created] = await outboxes[0].create(workspace.id, [({"agentId": "a"}, False)])
        assert created.document is not None
        conv_id = created.document["id"]
        actions = [Action.JOIN, Action.LEAVE, Action.END, Action.ANALYSIS, Action.FAIL] * 8

        async def move(n: int, action: Action) -> Any:
            try:
                return await outboxes[n % 2].transition(workspace.id, conv_id, action, {})
            except TransitionError:
                return None

        outcomes = await asyncio.gather(*(move(n, a) for n, a in enumerate(actions)))
        wins = [a for a, o in zip(actions, outcomes, strict=True) if o is not None]
        assert wins.count(Action.JOIN) + wins.count(Action.FAIL) == 1
        events = await first.events_after(0)
        assert [e.conversation_seq for e in events] == list(range(1, len(wins) + 1))
        final = await second.get_conversation(workspace.id, conv_id)
        last = [o for o in outcomes if o is not None]
        assert final in [o.fields for o in last]
        assert final == (await first.get_conversation(workspace.id, conv_id))
        body = await first.get_event(workspace.id, events[-1].id)
        assert final == json.loads(body)["payload"]


def test_the_producer_store_refuses_a_writer_process(tmp_path: Path) -> None:
    """The producer's writes carry functions and raise the API's own errors, so its SQLite
    database must keep the writer thread; a writer process is refused with that advice."""
    from convhook.errors import ConfigError
    from convhook.store import open_database

    db = open_database(str(tmp_path / "p.db"), "producer", writer="process")
    with pytest.raises(ConfigError, match="writer='thread'"):
        ProducerStore(db)
