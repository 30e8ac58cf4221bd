"""The dispatcher against a real outbox (SQLite and PostgreSQL) and a real HTTP receiver: order, signatures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from convhook.dispatcher import Dispatcher
from convhook.retry import RetryPolicy
from convhook.signing import Secret, Verifier
from convhook.store import open_database
from convhook.store.delivery import log as delivery_log
from convhook.store.engine.database import Database
from tests.support.delivery import (
    LIFECYCLE,
    Receiver,
    Reply,
    add_endpoint,
    add_workspace,
    record_event,
)
from tests.support.servers import serve_app


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A producer database with delivery tables, on SQLite and on PostgreSQL."""
    async with open_database(
        database_url, "producer", synchronous="NORMAL", auto_upgrade=True
    ) as database:
        yield database


def _ms() -> int:
    return int(time.time() * 1000)


async def test_lifecycle_arrives_signed_in_order(db: Database) -> None:
    """Four events of one conversation reach the endpoint in order, signed, bodies unchanged."""
    secret = str(Secret.generate())
    receiver = Receiver()
    async with serve_app(receiver) as base:
        ws = await db.write(add_workspace)
        await db.write(lambda c: add_endpoint(c, ws, base + "/hook", secret, _ms()))
        sent = []
        for seq, event_type in enumerate(LIFECYCLE, 1):
            sent.append(
                await db.write(
                    lambda c, s=seq, t=event_type: record_event(c, ws, "conv_1", s, t, _ms())
                )
            )
        async with Dispatcher(db, allow_private=True) as dispatcher:
            dispatcher.wake()
            got = await receiver.wait_for(4)
    assert [r.event["eventType"] for r in got] == list(LIFECYCLE)
    assert [r.body for r in got] == [body for _, body in sent]
    verifier = Verifier(secret)
    for request, (event_id, _) in zip(got, sent, strict=True):
        assert request.headers["webhook-id"] == event_id
        assert verifier.verify(request.headers, request.body) == event_id
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"].startswith("convhook/")
        assert request.path == "/hook"


async def test_later_event_waits_for_earlier_but_other_conversations_flow(
    db: Database,
) -> None:
    """A retrying event holds back its conversation's later events only; a final failure frees them."""
    receiver = Receiver().then(Reply(500))
    clock_now = [time.time()]
    policy = RetryPolicy(schedule=(0, 5), jitter=lambda: 0.5)
    async with serve_app(receiver) as base:
        ws = await db.write(add_workspace)
        ep = await db.write(lambda c: add_endpoint(c, ws, base, str(Secret.generate()), _ms()))
        a1, _ = await db.write(lambda c: record_event(c, ws, "conv_a", 1, LIFECYCLE[0], _ms()))
        a2, _ = await db.write(lambda c: record_event(c, ws, "conv_a", 2, LIFECYCLE[1], _ms()))
        b1, _ = await db.write(lambda c: record_event(c, ws, "conv_b", 1, LIFECYCLE[0], _ms()))
        ids = {
            e: (await db.read(lambda c, e=e: delivery_log.of_event(c, ws, e)))[0].id
            for e in (a1, a2, b1)
        }
        clock_now[0] = time.time() + 0.01
        dispatcher = Dispatcher(db, allow_private=True, policy=policy, clock=lambda: clock_now[0])
        await dispatcher.open()
        try:
            first = await dispatcher.run_once()
            assert sorted(r.delivery_id for r in first) == sorted([ids[a1], ids[b1]])
            assert await dispatcher.run_once() == []  # a2 waits for a1's retry
            receiver.then(Reply(500))
            clock_now[0] += 5
            second = await dispatcher.run_once()
            assert [r.delivery_id for r in second] == [ids[a1]]  # last attempt: failed for good
            third = await dispatcher.run_once()
            assert [r.delivery_id for r in third] == [ids[a2]]
        finally:
            await dispatcher.close()
        rows = await db.read(lambda c: delivery_log.of_endpoint(c, ws, ep))
    status = {r.event_id: r.status for r in rows}
    assert status == {a1: "failed", a2: "delivered", b1: "delivered"}


async def test_in_flight_limit_per_endpoint(db: Database) -> None:
    """An endpoint never has more than LEASE_FACTOR times its max_in_flight leased (the next
    ones ready)."""
    from convhook.store.delivery import LEASE_FACTOR, DeliveryStore

    room = LEASE_FACTOR * 2

    ws = await db.write(add_workspace)
    await db.write(
        lambda c: add_endpoint(
            c, ws, "http://x.invalid", str(Secret.generate()), 0, max_in_flight=2
        )
    )
    for i in range(room + 2):
        await db.write(lambda c, i=i: record_event(c, ws, f"conv_{i}", 1, LIFECYCLE[0], 0))
    now = _ms()
    first = await DeliveryStore(db).claim("w1", now, 60_000, 100)
    second = await DeliveryStore(db).claim("w2", now, 60_000, 100)
    assert len(first) == room
    assert second == []
    later = await DeliveryStore(db).claim("w2", now + 60_000, 60_000, 100)
    assert {c.delivery_id for c in later} == {c.delivery_id for c in first}  # leases expired


async def test_rate_limit_caps_leases(db: Database) -> None:
    """A rate-limited endpoint holds about LEASE_FACTOR seconds' worth of leases."""
    from convhook.store.delivery import LEASE_FACTOR, DeliveryStore

    ws = await db.write(add_workspace)
    await db.write(
        lambda c: add_endpoint(c, ws, "http://x.invalid", str(Secret.generate()), 0, rate_limit=3)
    )
    for i in range(3 * LEASE_FACTOR + 4):
        await db.write(lambda c, i=i: record_event(c, ws, f"conv_{i}", 1, LIFECYCLE[0], 0))
    claims = await DeliveryStore(db).claim("w", _ms(), 60_000, 100)
    assert len(claims) == 3 * LEASE_FACTOR


async def test_concurrent_requests_stay_within_max_in_flight(db: Database) -> None:
    """However many are leased, at most max_in_flight requests to an endpoint run at once."""
    receiver = Receiver().then(*[Reply(delay=0.05) for _ in range(20)])
    running = [0, 0]  # now, peak

    class Counting(Receiver):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                running[0] += 1
                running[1] = max(running)
            try:
                await receiver(scope, receive, send)
            finally:
                if scope["type"] == "http":
                    running[0] -= 1

    async with serve_app(Counting()) as base:
        ws = await db.write(add_workspace)
        await db.write(
            lambda c: add_endpoint(c, ws, base, str(Secret.generate()), _ms(), max_in_flight=3)
        )
        for i in range(20):
            await db.write(lambda c, i=i: record_event(c, ws, f"conv_{i}", 1, LIFECYCLE[0], _ms()))
        async with Dispatcher(db, allow_private=True) as dispatcher:
            dispatcher.wake()
            await receiver.wait_for(20)
    assert running[1] == 3


async def test_lease_outlasts_every_leased_claim_waiting_its_turn(db: Database) -> None:
    """With an endpoint's whole lease room queued behind slow requests, no lease ends before
    its delivery was sent: each event goes out once (a shorter lease sent some twice)."""
    from convhook.store.delivery import LEASE_FACTOR

    room = LEASE_FACTOR  # max_in_flight=1
    receiver = Receiver().then(*[Reply(delay=0.6) for _ in range(2 * room)])
    async with serve_app(receiver) as base:
        ws = await db.write(add_workspace)
        await db.write(
            lambda c: add_endpoint(c, ws, base, str(Secret.generate()), _ms(), max_in_flight=1)
        )
        for i in range(room):
            await db.write(lambda c, i=i: record_event(c, ws, f"conv_{i}", 1, LIFECYCLE[0], _ms()))
        dispatcher = Dispatcher(db, allow_private=True, timeout=0.5, lease=1.0, poll_interval=0.05)
        assert dispatcher.lease == dispatcher.hold_factor * LEASE_FACTOR * 0.5 + 1
        assert dispatcher.hold_factor == (4 if db.dialect.name == "postgres" else 2)
        async with dispatcher:
            dispatcher.wake()
            await receiver.wait_for(room, timeout=10)
            # Past the lease asked for (1 s) and past every request's end: a claim whose
            # lease had ended would have been taken and sent again by now.
            await asyncio.sleep(0.8)
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == room


async def test_attempts_after_lists_attempt_lines(db: Database) -> None:
    """attempts_after gives each new attempt with its event and outcome, for events tail."""
    receiver = Receiver().then(Reply(503))
    async with serve_app(receiver) as base:
        ws = await db.write(add_workspace)
        await db.write(lambda c: add_endpoint(c, ws, base, str(Secret.generate()), _ms()))
        start = await db.read(delivery_log.last_attempt_id)
        event_id, _ = await db.write(
            lambda c: record_event(c, ws, "conv_1", 1, LIFECYCLE[0], _ms())
        )
        dispatcher = Dispatcher(db, allow_private=True)
        await dispatcher.open()
        try:
            await dispatcher.run_once()
        finally:
            await dispatcher.close()
    [line] = await db.read(lambda c: delivery_log.attempts_after(c, start, workspace_id=ws))
    assert (line.event_id, line.status_code, line.delivery_status) == (event_id, 503, "pending")
    assert await db.read(lambda c: delivery_log.attempts_after(c, line.id)) == []


async def test_rate_limit_spaces_requests(db: Database) -> None:
    """An endpoint limited to 20/s receives 10 events spread over at least 0.4 s."""
    receiver = Receiver()
    async with serve_app(receiver) as base:
        ws = await db.write(add_workspace)
        await db.write(
            lambda c: add_endpoint(c, ws, base, str(Secret.generate()), _ms(), rate_limit=20)
        )
        for i in range(10):
            await db.write(lambda c, i=i: record_event(c, ws, f"conv_{i}", 1, LIFECYCLE[0], _ms()))
        started = time.monotonic()
        async with Dispatcher(db, allow_private=True, poll_interval=0.05) as dispatcher:
            dispatcher.wake()
            await receiver.wait_for(10)
        elapsed = time.monotonic() - started
    assert elapsed >= 0.4
