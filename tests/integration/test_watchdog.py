"""The watchdog (convhook.watchdog) on both engines: stale conversations end once with
endReason timeout (counted), a racing client end never adds a second terminal event, one
watchdog acts per database (the lease), and a conversation refused for good is not retried
every sweep."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from convhook.errors import ConfigError
from convhook.lifecycle import Action, TransitionError
from convhook.metrics import REGISTRY
from convhook.outbox import Outbox
from convhook.store.engine.connection import Connection
from convhook.store.producer import ProducerStore
from convhook.store.producer.watchdog import WATCHED, stale
from convhook.watchdog import LEASE, Limits, Watchdog, parse_duration
from tests.support.servers import eventually

SECOND = 1_000
# Every limit one second: with a clock an hour ahead every live conversation is stale.
SHORT = Limits(created=SECOND, dialing=SECOND, active=SECOND, left=SECOND)


def ahead(seconds: float = 3600) -> Callable[[], float]:
    """A clock ``seconds`` in the future: what is written now looks that old to it."""
    return lambda: time.time() + seconds


@asynccontextmanager
async def producer(url: str) -> AsyncIterator[tuple[ProducerStore, Outbox, str]]:
    """An open store on ``url``, its outbox and a workspace id."""
    async with ProducerStore.at(url, auto_upgrade=True) as store:
        workspace, _ = await store.create_workspace("w")
        yield store, Outbox(store, max_active=10_000), workspace.id


async def conversations(outbox: Outbox, ws: str, count: int, *moves: Action) -> list[str]:
    """``count`` new conversations, each moved through ``moves``."""
    created = await outbox.create(ws, [({"agentId": "a"}, False)] * count)
    ids = [c.document["id"] for c in created if c.document is not None]
    for action in moves:
        await asyncio.gather(*(outbox.transition(ws, c, action, {}) for c in ids))
    return ids


async def events_of(store: ProducerStore, ws: str) -> list[dict[str, Any]]:
    """Every event of the workspace in wire form, oldest first."""
    page = await store.list_events(ws, limit=500)
    return [json.loads(item) for item in page.items]


def terminal(events: list[dict[str, Any]]) -> Counter[str]:
    """How many conversation.completed events each conversation has."""
    return Counter(e["payload"]["id"] for e in events if e["eventType"] == "conversation.completed")


def timed_out_count(phase: str) -> float:
    """The process's convhook_conversations_timed_out counter for ``phase``."""
    value = REGISTRY.get_sample_value("convhook_conversations_timed_out_total", {"phase": phase})
    return value or 0.0


async def test_left_conversation_gets_one_timeout(database_url: str) -> None:
    """A conversation left after join is ended once with status completed and endReason
    timeout; later sweeps find nothing more to do."""
    async with producer(database_url) as (store, outbox, ws):
        [conv] = await conversations(outbox, ws, 1, Action.JOIN, Action.LEAVE)
        watchdog = Watchdog(outbox, SHORT, clock=ahead())
        counted = timed_out_count("left")
        assert await watchdog.sweep() == 1
        assert await watchdog.sweep() == 0
        assert timed_out_count("left") == counted + 1
        events = await events_of(store, ws)
        assert [e["eventType"] for e in events] == [
            "conversation.userJoined",
            "conversation.userLeft",
            "conversation.completed",
        ]
        done = events[-1]["payload"]
        assert done["conversationStatus"] == "completed"
        assert done["endReason"] == "timeout"
        stored = await store.get_conversation(ws, conv)
        assert stored["endReason"] == "timeout"
        # The conversation is ended like any other: analysis may follow.
        await outbox.transition(ws, conv, Action.ANALYSIS, {"summary": "s"})


async def test_dialing_fails_and_created_is_left_alone(database_url: str) -> None:
    """With the default limits a conversation dialing too long fails with endReason timeout,
    while one merely created is never touched (created is off by default)."""
    async with producer(database_url) as (store, outbox, ws):
        [dialing] = await conversations(outbox, ws, 1, Action.DIAL)
        [created] = await conversations(outbox, ws, 1)
        watchdog = Watchdog(outbox, clock=ahead(24 * 3600))
        assert await watchdog.sweep() == 1
        failed = await store.get_conversation(ws, dialing)
        assert failed["conversationStatus"] == "failed"
        assert failed["endReason"] == "timeout"
        assert (await store.get_conversation(ws, created))["conversationStatus"] == "created"
        [event] = await events_of(store, ws)
        assert event["eventType"] == "conversation.completed"
        assert event["payload"]["id"] == dialing


async def test_limits_are_per_phase(database_url: str) -> None:
    """Only conversations older than their own phase's limit are ended: with an hour's idle
    time a 4 h active limit waits while a 10 min left limit acts."""
    async with producer(database_url) as (store, outbox, ws):
        [active] = await conversations(outbox, ws, 1, Action.JOIN)
        [left] = await conversations(outbox, ws, 1, Action.JOIN, Action.LEAVE)
        watchdog = Watchdog(outbox, clock=ahead(3600))
        assert await watchdog.sweep() == 1
        assert (await store.get_conversation(ws, left))["conversationStatus"] == "completed"
        assert (await store.get_conversation(ws, active))["conversationStatus"] == "active"


async def test_racing_client_end_and_watchdog(database_url: str) -> None:
    """Client ends racing the watchdog over many conversations, round after round, leave each
    conversation with exactly one terminal event, whoever wins."""
    async with producer(database_url) as (store, outbox, ws):
        watchdog = Watchdog(outbox, SHORT, batch=7, clock=ahead())
        won = Counter[str]()
        for _ in range(5):
            ids = await conversations(outbox, ws, 40, Action.JOIN)

            async def end(conv: str, delay: float) -> bool:
                await asyncio.sleep(delay)
                try:
                    await outbox.transition(ws, conv, Action.END, {"endReason": "user_hangup"})
                except TransitionError:
                    return False
                return True

            # Spread over the sweep's length, so some ends land before, some during and
            # some after the watchdog's write of the same conversation.
            ends = (end(c, n * 0.002) for n, c in enumerate(ids))
            outcomes = await asyncio.gather(watchdog.sweep(), *ends)
            by_watchdog, by_client = outcomes[0], sum(outcomes[1:])
            assert by_watchdog + by_client == len(ids)
            won.update(watchdog=by_watchdog, client=by_client)
            counts = terminal(await events_of(store, ws))
            assert all(counts[c] == 1 for c in ids)
        # Both sides won some conversations: the two really raced.
        assert won["watchdog"] > 0
        assert won["client"] > 0


async def test_guard_refuses_a_conversation_moved_after_the_read(database_url: str) -> None:
    """A conversation that moved between the watchdog's read and its write is left alone:
    the guard sees a different phase inside the write and refuses."""
    async with producer(database_url) as (store, outbox, ws):
        [conv] = await conversations(outbox, ws, 1, Action.JOIN)
        watchdog = Watchdog(outbox, SHORT, clock=ahead())
        [found] = await stale(store, WATCHED[2], before=watchdog._now())
        await outbox.transition(ws, conv, Action.LEAVE, {})
        assert await watchdog._end(found, watchdog._now()) is False
        assert (await store.get_conversation(ws, conv)).get("endReason") is None
        assert [e["eventType"] for e in await events_of(store, ws)] == [
            "conversation.userJoined",
            "conversation.userLeft",
        ]


async def test_one_watchdog_acts_per_database(database_url: str) -> None:
    """Of two watchdogs on one database only the lease holder ends conversations; the other
    takes over once the holder closes (releasing the lease) and, after a crash, once the
    holder's lease has expired."""
    async with (
        producer(database_url) as (store, outbox, ws),
        ProducerStore.at(database_url) as other_store,
    ):
        clock = [time.time() + 3600]
        first = Watchdog(outbox, SHORT, lease_ttl=10, clock=lambda: clock[0])
        second = Watchdog(Outbox(other_store), SHORT, lease_ttl=10, clock=lambda: clock[0])
        await conversations(outbox, ws, 3, Action.JOIN)
        assert await first.sweep() == 3
        await conversations(outbox, ws, 2, Action.JOIN)
        assert await second.sweep() == 0
        assert not second.leading
        assert await first.sweep() == 2
        # A crashed holder releases nothing: the other waits for the lease to expire.
        await conversations(outbox, ws, 1, Action.JOIN)
        clock[0] += 9
        assert await second.sweep() == 0
        clock[0] += 2
        assert await second.sweep() == 1
        assert second.leading
        assert await first.sweep() == 0
        assert not first.leading
        # A watchdog that closes gives the lease up at once.
        await second.start()
        await asyncio.sleep(0.05)
        await second.close()
        await conversations(outbox, ws, 1, Action.JOIN)
        assert await first.sweep() == 1
        counts = terminal(await events_of(store, ws))
        assert len(counts) == 7
        assert set(counts.values()) == {1}


async def test_lease_is_one_row(database_url: str) -> None:
    """The lease is one row naming its holder and expiry, renewed by each sweep."""
    async with producer(database_url) as (store, outbox, _):
        watchdog = Watchdog(outbox, SHORT, lease_ttl=5, owner="wd_test")
        await watchdog.sweep()

        def lease(conn: Connection) -> list[Any]:
            rows = conn.execute("SELECT name, owner, expires_at FROM leader_leases").fetchall()
            return [tuple(r) for r in rows]

        [(name, owner, expires)] = await store.db.read(lease)
        assert (name, owner) == (LEASE, "wd_test")
        assert abs(expires - (time.time() + 5) * 1000) < 2000


async def test_permanent_refusal_is_logged_once_and_skipped(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A conversation whose timeout the outbox refuses for good (a row no longer valid as an
    event) is logged once and skipped by later sweeps, while others still time out."""
    caplog.set_level("INFO", logger="convhook")
    async with producer(database_url) as (store, outbox, ws):
        broken, fine = await conversations(outbox, ws, 2, Action.JOIN)

        def spoil(conn: Connection, conv: str) -> None:
            row = conn.execute("SELECT body FROM conversations WHERE id = ?", (conv,)).fetchone()
            body = json.loads(row[0])
            body["conversationType"] = "fax"  # kept when read, refused on emission
            conn.execute("UPDATE conversations SET body = ? WHERE id = ?", (json.dumps(body), conv))

        await store.db.write(spoil, broken)
        watchdog = Watchdog(outbox, SHORT, clock=ahead())
        assert await watchdog.sweep() == 1
        assert await watchdog.sweep() == 0
        actions = [getattr(r, "action", None) for r in caplog.records]
        assert actions.count("conversation_timeout_refused") == 1
        assert actions.count("conversation_timed_out") == 1
        timed_out = next(r for r in caplog.records if r.action == "conversation_timed_out")  # type: ignore[attr-defined]
        assert timed_out.conversation_id == fine  # type: ignore[attr-defined]
        assert (await store.get_conversation(ws, broken))["conversationStatus"] == "active"


async def test_a_timeout_that_breaks_a_constraint_is_skipped_not_raised(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A conversation whose timeout event collides with a stray stored event (a constraint
    fails the same way every sweep) is given up, and the later phases are still swept."""
    caplog.set_level("INFO", logger="convhook")
    async with producer(database_url) as (store, outbox, ws):
        (dialing,) = await conversations(outbox, ws, 1, Action.DIAL)
        (active,) = await conversations(outbox, ws, 1, Action.JOIN)

        def stray(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, "
                "event_type, body, created_at) VALUES ('evt_stray', ?, ?, 1, "
                "'conversation.userJoined', '{}', 0)",
                (ws, dialing),
            )

        await store.db.write(stray)
        watchdog = Watchdog(outbox, SHORT, clock=ahead())
        assert await watchdog.sweep() == 1
        assert await watchdog.sweep() == 0
        actions = [getattr(r, "action", None) for r in caplog.records]
        assert actions.count("conversation_timeout_refused") == 1
        assert (await store.get_conversation(ws, active))["conversationStatus"] == "completed"
        assert (await store.get_conversation(ws, dialing))["conversationStatus"] == "dialing"


async def test_batches_walk_past_many_stale(database_url: str) -> None:
    """More stale conversations than a batch are all ended in one sweep, a batch at a time."""
    async with producer(database_url) as (store, outbox, ws):
        ids = await conversations(outbox, ws, 25, Action.JOIN, Action.LEAVE)
        watchdog = Watchdog(outbox, SHORT, batch=4, clock=ahead())
        assert await watchdog.sweep() == 25
        counts = terminal(await events_of(store, ws))
        assert sorted(counts) == sorted(ids)


async def test_running_watchdog_ends_conversations(database_url: str) -> None:
    """Started as a task, the watchdog sweeps by itself at its interval."""
    async with producer(database_url) as (store, outbox, ws):
        [conv] = await conversations(outbox, ws, 1, Action.JOIN)
        async with Watchdog(outbox, SHORT, interval=0.05, clock=ahead()) as watchdog:
            await eventually(lambda: watchdog.ended == 1, timeout=10)
        assert (await store.get_conversation(ws, conv))["endReason"] == "timeout"


async def test_stale_query_uses_the_partial_index(tmp_path: Any) -> None:
    """SQLite plans the watchdog's query on the partial index conversations_stale."""
    async with producer(str(tmp_path / "c.db")) as (store, _, _):

        def plan(conn: Connection) -> str:
            from convhook.store.producer.watchdog import _STALE

            rows = conn.execute("EXPLAIN QUERY PLAN " + _STALE, ("active", 0, 0, "", 10)).fetchall()
            return " ".join(str(tuple(r)) for r in rows)

        assert "conversations_stale" in await store.db.read(plan)


@pytest.mark.parametrize("text", ["90", "2 m", "1d", "-1s", "1.5h", "", "4H"])
def test_bad_durations_are_refused(text: str) -> None:
    """Only whole seconds, minutes or hours (or 0) are durations; the error names the option."""
    with pytest.raises(ConfigError, match="--watchdog-left"):
        parse_duration(text, name="--watchdog-left")


def test_durations() -> None:
    """90s, 2m, 4h and 0 read as milliseconds."""
    assert [parse_duration(t, name="x") for t in ("90s", "2m", "4h", "0")] == [
        90_000,
        120_000,
        14_400_000,
        0,
    ]
