"""The delivery log's status-filtered listing and /metrics counts on both engines, and the
indexes of migration 0003 that keep them (and the events of a conversation) off full scans."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from convhook.signing import Secret
from convhook.store import open_database
from convhook.store.delivery import log as delivery_log
from convhook.store.engine.database import Database
from convhook.store.producer import event_log
from tests.support.delivery import LIFECYCLE, add_endpoint, add_workspace, record_event

# Statuses given to the deliveries of conversation n's events, in order.
_STATUSES = ("delivered", "failed", "pending", "delivering", "delivered", "delivered")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated producer database on either engine."""
    async with open_database(database_url, "producer", auto_upgrade=True) as opened:
        yield opened


async def _fill(db: Database) -> tuple[str, str, dict[str, list[int]]]:
    """A workspace, an endpoint and 24 deliveries in every status; ids by status, newest first."""

    def fill(c: Any) -> tuple[str, str]:
        ws = add_workspace(c)
        ep = add_endpoint(c, ws, "http://x.invalid", str(Secret.generate()), 0)
        for n in range(6):
            for seq, event_type in enumerate(LIFECYCLE, 1):
                record_event(c, ws, f"conv_{n}", seq, event_type, 0)
        rows = c.execute("SELECT id FROM deliveries ORDER BY id").fetchall()
        for i, row in enumerate(rows):
            c.execute(
                "UPDATE deliveries SET status = ? WHERE id = ?",
                (_STATUSES[i % len(_STATUSES)], row[0]),
            )
        return ws, ep

    ws, ep = await db.write(fill)
    rows = await db.read(
        lambda c: c.execute("SELECT id, status FROM deliveries ORDER BY id DESC").fetchall()
    )
    by_status: dict[str, list[int]] = {}
    for row in rows:
        by_status.setdefault(row[1], []).append(row[0])
    return ws, ep, by_status


async def test_endpoint_listing_filters_each_status_newest_first(db: Database) -> None:
    """Listing an endpoint's deliveries by status returns exactly that status, newest first,
    paged by id; an unknown status returns nothing."""
    ws, ep, expected = await _fill(db)
    for status, ids in expected.items():
        listed = await db.read(
            lambda c, s=status: delivery_log.of_endpoint(c, ws, ep, status=s, limit=100)
        )
        assert [d.id for d in listed] == ids
        page = await db.read(
            lambda c, s=status, i=ids: delivery_log.of_endpoint(
                c, ws, ep, status=s, limit=2, before=i[0]
            )
        )
        assert [d.id for d in page] == ids[1:3]
    everything = await db.read(lambda c: delivery_log.of_endpoint(c, ws, ep, limit=100))
    assert len(everything) == 24
    unknown = await db.read(lambda c: delivery_log.of_endpoint(c, ws, ep, status="lost"))
    assert unknown == []


async def test_backlog_counts_every_status_exactly(db: Database) -> None:
    """/metrics' counts by status are exact on small tables, delivered included."""
    _, _, expected = await _fill(db)
    backlog = await db.read(lambda c: delivery_log.backlog(c, 0))
    assert backlog.by_status == {status: len(ids) for status, ids in expected.items()}


async def test_backlog_estimates_delivered_on_large_postgres_tables(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ESTIMATE_ABOVE rows PostgreSQL reports delivered from the table's statistics
    (exact right after ANALYZE) and the other statuses exactly."""
    async with open_database(pg_url, "producer", auto_upgrade=True) as db:
        _, _, expected = await _fill(db)
        await db.write(lambda c: c.execute("ANALYZE deliveries"))
        monkeypatch.setattr(delivery_log, "ESTIMATE_ABOVE", 1)
        backlog = await db.read(lambda c: delivery_log.backlog(c, 0))
    assert backlog.by_status == {status: len(ids) for status, ids in expected.items()}


async def test_sqlite_plans_use_the_0003_indexes(db_path: Any) -> None:
    """Without statistics SQLite's planner reads the status-filtered listings and the events
    of a conversation through their indexes, not the endpoint's or workspace's whole range."""
    async with open_database(str(db_path), "producer") as db:
        ws, ep, _ = await _fill(db)

        def plans(c: Any) -> list[str]:
            found = []
            for sql, args in (
                (
                    "SELECT id FROM deliveries WHERE endpoint_id = ? AND workspace_id = ? "
                    f"{delivery_log._status_terms('failed')} AND id < ? ORDER BY id DESC LIMIT ?",
                    (ep, ws, 2**62, 10),
                ),
                (
                    "SELECT seq FROM events WHERE workspace_id = ? AND seq > ? "
                    "AND conversation_id = ? ORDER BY seq LIMIT ?",
                    (ws, 0, "conv_1", 10),
                ),
                (
                    "SELECT id FROM deliveries WHERE endpoint_id = ? AND workspace_id = ? "
                    f"{delivery_log._status_terms('pending')} AND id < ? ORDER BY id DESC LIMIT ?",
                    (ep, ws, 2**62, 10),
                ),
            ):
                rows = c.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
                found.append(" ".join(r[3] for r in rows))
            return found

        listing, events, waiting = await db.read(plans)
        page = await db.read(
            lambda c: event_log.list_page(c, ws, 0, 10, (("conversation_id = ?", "conv_1"),))
        )
    assert "deliveries_failed_by_endpoint" in listing
    assert "TEMP B-TREE" not in listing + waiting
    assert "events_of_conversation" in events
    assert "deliveries_waiting_by_endpoint" in waiting
    assert len(page.items) == 4
