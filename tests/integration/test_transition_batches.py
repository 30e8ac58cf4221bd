"""Concurrent lifecycle transitions share one write (convhook.store.producer.changes) and each
still gets exactly its own outcome: on both engines, with the active-conversation limit,
several transitions of one conversation, refusals and a failing row in the same batch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from psycopg.pq import Trace

from convhook.errors import ActiveLimitError, NotFoundError, StoreError
from convhook.ids import new_id
from convhook.lifecycle import Action, TransitionError, apply, transition
from convhook.outbox import Outbox
from convhook.store.engine.groupcommit import Job
from convhook.store.producer import Change, NewEvent, ProducerStore, StoredConversation
from convhook.store.producer.changes import Transition, change_batch
from convhook.timefmt import utcnow


async def _setup(store: ProducerStore, count: int, max_active: int = 1000) -> tuple[Any, ...]:
    workspace, _ = await store.create_workspace("w")
    outbox = Outbox(store, max_active=max_active)
    created = await outbox.create(workspace.id, [({"agentId": "a"}, False)] * count)
    ids = [c.document["id"] for c in created if c.document is not None]
    return workspace.id, outbox, ids


async def test_concurrent_transitions_share_one_write(database_url: str) -> None:
    """Fifty joins submitted together commit in far fewer transactions than fifty, and each
    conversation gets its own event with the right sequence number."""
    async with ProducerStore.at(database_url, auto_upgrade=True) as store:
        ws, outbox, ids = await _setup(store, 50)
        writes_before = store.db.writes
        changes = await asyncio.gather(*(outbox.transition(ws, c, Action.JOIN, {}) for c in ids))
        assert store.db.writes - writes_before < 10
        assert [c.fields["id"] for c in changes] == ids
        events = await store.events_after(0)
        assert sorted(e.conversation_id for e in events) == sorted(ids)
        assert {e.conversation_seq for e in events} == {1}
        for c in changes:
            assert await store.get_conversation(ws, c.fields["id"]) == c.fields


async def test_one_conversation_moved_several_times_in_one_batch(database_url: str) -> None:
    """Join, leave and end of one conversation submitted together apply in order with event
    sequence 1, 2, 3, and the stored row is the last change; a fourth, out-of-order move
    (join again) is refused alone."""
    async with ProducerStore.at(database_url, auto_upgrade=True) as store:
        ws, outbox, [conv] = await _setup(store, 1)
        moves = [Action.JOIN, Action.LEAVE, Action.JOIN, Action.END]

        async def move(action: Action) -> Any:
            try:
                return await outbox.transition(ws, conv, action, {})
            except TransitionError as exc:
                return exc

        outcomes = await asyncio.gather(*(move(a) for a in moves))
        assert isinstance(outcomes[2], TransitionError)
        applied = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(applied) == 3
        events = await store.events_after(0)
        assert [e.conversation_seq for e in events] == [1, 2, 3]
        assert [e.event_type for e in events] == [
            "conversation.userJoined",
            "conversation.userLeft",
            "conversation.completed",
        ]
        stored = await store.get_conversation(ws, conv)
        assert stored == applied[-1].fields
        body = json.loads(await store.get_event(ws, events[-1].id))
        assert body["payload"] == stored


async def test_the_active_limit_holds_inside_one_batch(database_url: str) -> None:
    """With a limit of two busy conversations, of four joins submitted together two are
    refused with ActiveLimitError; an end submitted with a third join frees its slot."""
    async with ProducerStore.at(database_url, auto_upgrade=True) as store:
        ws, outbox, ids = await _setup(store, 6, max_active=2)

        async def move(conv: str, action: Action) -> Any:
            try:
                return await outbox.transition(ws, conv, action, {})
            except ActiveLimitError as exc:
                return exc

        outcomes = await asyncio.gather(*(move(c, Action.JOIN) for c in ids[:4]))
        refused = [o for o in outcomes if isinstance(o, ActiveLimitError)]
        joined = [o for o in outcomes if not isinstance(o, BaseException)]
        assert (len(joined), len(refused)) == (2, 2)
        first = joined[0].fields["id"]
        # The end comes first in the batch and frees the slot the join then takes.
        end, join = await asyncio.gather(move(first, Action.END), move(ids[4], Action.JOIN))
        assert not isinstance(end, BaseException)
        assert not isinstance(join, BaseException)
        assert isinstance(await move(ids[5], Action.JOIN), ActiveLimitError)


async def test_a_row_that_fails_to_store_fails_alone(database_url: str) -> None:
    """A change whose event id already exists violates a constraint: that transition fails
    with a StoreError naming it, and the others of its batch commit with their events."""
    async with ProducerStore.at(database_url, auto_upgrade=True) as store:
        ws, outbox, ids = await _setup(store, 5)
        taken = await outbox.transition(ws, ids[0], Action.JOIN, {})
        [used] = taken.events

        def reuse_event_id(current: StoredConversation) -> Change:
            move = transition(current.id, current.phase, Action.JOIN)
            fields = apply(move, current.fields, {}, utcnow())
            text = json.dumps(fields, separators=(",", ":"))
            event = NewEvent(used.id, used.event_type, used.body)
            return Change(move.target, fields, text, (event,), move.takes_slot)

        results = await asyncio.gather(
            *(outbox.transition(ws, c, Action.JOIN, {}) for c in ids[1:4]),
            store.change_conversation(ws, ids[4], reuse_event_id, max_active=1000),
            return_exceptions=True,
        )
        assert all(not isinstance(r, BaseException) for r in results[:3])
        assert isinstance(results[3], StoreError)
        assert "could not be stored" in str(results[3])
        events = await store.events_after(0)
        assert sorted(e.conversation_id for e in events) == sorted(ids[:4])
        untouched = await store.get_conversation(ws, ids[4])
        assert untouched["conversationStatus"] == "created"


async def test_a_conversation_of_another_workspace_is_not_found(database_url: str) -> None:
    """In a batch, a transition naming another workspace's conversation is refused with
    NotFoundError and leaves it as it was; the rest of the batch commits."""
    async with ProducerStore.at(database_url, auto_upgrade=True) as store:
        ws, outbox, ids = await _setup(store, 2)
        other, _ = await store.create_workspace("other")
        results = await asyncio.gather(
            outbox.transition(ws, ids[0], Action.JOIN, {}),
            outbox.transition(other.id, ids[1], Action.JOIN, {}),
            outbox.transition(ws, "conv_missing", Action.JOIN, {}),
            return_exceptions=True,
        )
        assert not isinstance(results[0], BaseException)
        assert isinstance(results[1], NotFoundError)
        assert isinstance(results[2], NotFoundError)
        assert (await store.get_conversation(ws, ids[1]))["conversationStatus"] == "created"


async def test_two_stores_batching_on_the_same_conversations(database_url: str) -> None:
    """Two stores (two API processes) moving the same forty conversations at once: every
    conversation is joined exactly once, no batch deadlocks, and event sequences stay
    1 per conversation."""
    async with (
        ProducerStore.at(database_url, auto_upgrade=True) as first,
        ProducerStore.at(database_url) as second,
    ):
        ws, outbox, ids = await _setup(first, 40)
        outboxes = [outbox, Outbox(second, max_active=1000)]

        async def join(n: int, conv: str) -> Any:
            try:
                return await outboxes[n % 2].transition(ws, conv, Action.JOIN, {})
            except TransitionError as exc:
                return exc

        outcomes = await asyncio.wait_for(
            asyncio.gather(*(join(n, c) for n in range(2) for c in ids)), 30
        )
        assert sum(not isinstance(o, BaseException) for o in outcomes) == len(ids)
        events = await first.events_after(0)
        assert sorted(e.conversation_id for e in events) == sorted(ids)
        assert {e.conversation_seq for e in events} == {1}


def _join(current: StoredConversation) -> Change:
    """The decision Outbox.transition makes for a join, without the outbox."""
    move = transition(current.id, current.phase, Action.JOIN)
    fields = apply(move, current.fields, {}, utcnow())
    text = json.dumps(fields, separators=(",", ":"))
    event_id = new_id("evt")
    assert move.event is not None
    body = f'{{"eventId":"{event_id}","eventType":"{move.event.value}","payload":{text}}}'
    event = NewEvent(event_id, move.event.value, body)
    return Change(move.target, fields, text, (event,), move.takes_slot)


async def test_a_postgres_batch_costs_three_round_trips(pg_url: str, tmp_path: Path) -> None:
    """Twenty transitions in one batch on PostgreSQL cost three round trips, counted in
    libpq's protocol trace (each Sync or simple Query waits for the server): BEGIN with the
    savepoint and the reads, the writes, COMMIT."""
    async with ProducerStore.at(pg_url, auto_upgrade=True) as store:
        ws, _, ids = await _setup(store, 20)
        batch = [Transition(ws, c, _join, 1000) for c in ids]
        conn = store.db.connect()
        trace = tmp_path / "trace"
        with trace.open("wb") as sink:
            conn.raw.pgconn.trace(sink.fileno())
            conn.raw.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
            job = Job(change_batch, (batch,), lambda ok, value: None)
            assert store.db.group_commit().run(conn, [job])
            conn.raw.pgconn.untrace()
        conn.close()
        ok, outcomes = job.outcome
        assert ok
        assert all(isinstance(o, Change) for o in outcomes)
        # A message's line starts "F<tab>"; a multi-line statement's text continues on lines
        # of its own.
        lines = trace.read_text().splitlines()
        sent = [line.split("\t")[2] for line in lines if line.startswith("F\t")]
        assert sent.count("Sync") + sent.count("Query") == 3
        events = await store.events_after(0)
        assert sorted(e.conversation_id for e in events) == sorted(ids)
