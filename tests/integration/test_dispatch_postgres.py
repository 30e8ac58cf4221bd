"""Claims racing on one PostgreSQL database from independent connections (as separate
dispatcher processes would): per-endpoint limits and per-conversation order hold across them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from convhook.retry import Verdict
from convhook.signing import Secret
from convhook.store import open_database
from convhook.store.delivery import LEASE_FACTOR, Claim, DeliveryStore, Result, records
from convhook.store.delivery.claims_postgres import claim_postgres
from convhook.store.engine.database import Database
from tests.support.delivery import LIFECYCLE, add_endpoint, add_workspace, record_event


@pytest.fixture
async def dbs(pg_url: str) -> AsyncIterator[list[Database]]:
    """Three independent databases (own writer, own connections) on one PostgreSQL database."""
    first = open_database(pg_url, "producer", auto_upgrade=True)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(first)
        others = [open_database(pg_url, "producer") for _ in range(2)]
        for db in others:
            await stack.enter_async_context(db)
        yield [first, *others]


def _ms() -> int:
    return int(time.time() * 1000)


def _delivered(claims: list[Claim]) -> list[Result]:
    now = _ms()
    return [
        Result(
            c.delivery_id,
            c.endpoint_id,
            c.lease_owner,
            now,
            200,
            1.0,
            None,
            "",
            Verdict.DELIVERED,
            now,
        )
        for c in claims
    ]


async def _state(db: Database) -> list[Any]:
    rows: list[Any] = await db.read(
        lambda c: c.execute(
            "SELECT conversation_id, conversation_seq, status, endpoint_id FROM deliveries"
        ).fetchall()
    )
    return rows


async def test_claims_racing_keep_limits_and_order(dbs: list[Database]) -> None:
    """Three claimers racing round after round never lease more than LEASE_FACTOR times an endpoint's
    max_in_flight between them, never lease one conversation's events concurrently, and
    lease each conversation's events only after the earlier ones were delivered."""
    main = dbs[0]
    ws = await main.write(add_workspace)
    narrow = await main.write(
        lambda c: add_endpoint(
            c, ws, "http://x.invalid", str(Secret.generate()), 0, max_in_flight=3
        )
    )
    wide = await main.write(
        lambda c: add_endpoint(
            c, ws, "http://y.invalid", str(Secret.generate()), 0, max_in_flight=50
        )
    )

    def fill(c: Any) -> None:
        for conv in range(40):
            for seq, event_type in enumerate(LIFECYCLE, 1):
                record_event(c, ws, f"conv_{conv}", seq, event_type, 0)

    await main.write(fill)
    total = 40 * 4 * 2
    done = 0
    for _ in range(200):
        now = _ms()
        rounds = await asyncio.gather(
            *(DeliveryStore(db).claim(f"w{n}", now, 60_000, 30) for n, db in enumerate(dbs))
        )
        rows = await _state(main)
        leased = [r for r in rows if r[2] == "delivering"]
        assert sum(1 for r in leased if r[3] == narrow) <= 3 * LEASE_FACTOR
        assert sum(1 for r in leased if r[3] == wide) <= 100
        active = [(r[3], r[0]) for r in leased]
        assert len(active) == len(set(active)), "one conversation leased twice at once"
        status = {(r[3], r[0], r[1]): r[2] for r in rows}
        for endpoint, conv, seq, _ in [(r[3], r[0], r[1], r[2]) for r in leased]:
            earlier = [status[(endpoint, conv, s)] for s in range(1, seq)]
            assert all(s == "delivered" for s in earlier), (conv, seq, earlier)
        # Each claimer records what it leased, as a dispatcher would after sending.
        await asyncio.gather(
            *(
                db.write(records.record, _delivered(got), _ms(), 0)
                for db, got in zip(dbs, rounds, strict=True)
            )
        )
        done += sum(len(got) for got in rounds)
        if done >= total:
            break
    assert done == total
    assert {r[2] for r in await _state(main)} == {"delivered"}


async def test_expired_lease_is_claimed_by_another_process(dbs: list[Database]) -> None:
    """A lease left by a dead claimer returns after it expires and another claimer takes it;
    before that, nobody can."""
    main, other = dbs[0], dbs[1]
    ws = await main.write(add_workspace)
    await main.write(lambda c: add_endpoint(c, ws, "http://x.invalid", str(Secret.generate()), 0))
    await main.write(lambda c: record_event(c, ws, "conv_1", 1, LIFECYCLE[0], 0))
    now = _ms()
    [first] = await DeliveryStore(main).claim("dead", now, 5_000, 10)
    assert await DeliveryStore(other).claim("alive", now + 4_999, 5_000, 10) == []
    [again] = await DeliveryStore(other).claim("alive", now + 5_000, 5_000, 10)
    assert again.delivery_id == first.delivery_id
    assert again.lease_owner == "alive"


async def test_claim_waits_for_a_concurrent_claim_of_the_same_endpoint(pg_url: str) -> None:
    """A claim of an endpoint another transaction is claiming waits for it and then counts its
    leases: an endpoint never has more than LEASE_FACTOR times max_in_flight leased, even when the second
    claim's snapshot would show different due rows (here: earlier ones recorded meanwhile)."""
    import threading

    import psycopg

    from convhook.store.engine.postgres import PgConnection

    room = 3 * LEASE_FACTOR
    async with open_database(pg_url, "producer", auto_upgrade=True) as db:
        ws = await db.write(add_workspace)
        await db.write(
            lambda c: add_endpoint(
                c, ws, "http://x.invalid", str(Secret.generate()), 0, max_in_flight=3
            )
        )
        now = _ms()
        await db.write(
            lambda c: [record_event(c, ws, f"a{i}", 1, LIFECYCLE[0], now) for i in range(room + 4)]
        )
    first = PgConnection(psycopg.connect(pg_url, autocommit=True))
    second = PgConnection(psycopg.connect(pg_url, autocommit=True))
    other = PgConnection(psycopg.connect(pg_url, autocommit=True))
    try:
        first.execute("BEGIN")
        held = claim_postgres(first, "first", now, 60_000, 30)
        assert len(held) == room
        # Due earlier than everything the first claim saw: a claim that did not wait for the
        # first one would find them free and lease them too.
        for i in range(6):
            record_event(other, ws, f"b{i}", 1, LIFECYCLE[0], now - 1000)
        got: list[Claim] = []

        def claim_second() -> None:
            second.execute("BEGIN")
            got.extend(claim_postgres(second, "second", now, 60_000, 30))
            second.execute("COMMIT")

        thread = threading.Thread(target=claim_second)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second claim did not wait for the endpoint"
        first.execute("COMMIT")
        thread.join(10)
        assert got == []
        leased = other.execute(
            "SELECT count(*) FROM deliveries WHERE status = 'delivering'"
        ).fetchone()
        assert leased is not None
        assert leased[0] == room
    finally:
        for conn in (first, second, other):
            conn.close()
