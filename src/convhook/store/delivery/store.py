"""The delivery store: endpoints, claiming and recording deliveries, the delivery log.

:class:`DeliveryStore` is the async facade the API, the CLI and the dispatcher use, over
either engine (a :class:`~convhook.store.engine.database.Database`). Every write is a named
operation of this package (:mod:`.endpoints`, :mod:`.claims`, :mod:`.claims_postgres`,
:mod:`.records` and the claim-and-record operations here), so it runs on the database's
writer wherever that is: a thread, or for SQLite with ``writer="process"`` a child process.
Reads are operations too (:mod:`.log`, :mod:`.endpoints`, :mod:`.claims`), run on the
database's reader threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from convhook.store.delivery import claims, claims_postgres, endpoints, log, records
from convhook.store.delivery.claims import Claim
from convhook.store.delivery.dialect import CHANNEL
from convhook.store.delivery.endpoints import Endpoint
from convhook.store.delivery.log import AttemptLine, Backlog, Delivery
from convhook.store.delivery.records import Result
from convhook.store.engine.connection import Connection
from convhook.store.engine.database import Unwatch
from convhook.store.engine.resource import Facade

# Where a delivery is claimed, per engine: SQLite's one writer claims with plain reads and
# writes; PostgreSQL's concurrent claimers lock endpoints, then lease under those locks.
CLAIM_BY_DIALECT: dict[str, Callable[[Connection, str, int, int, int], list[Claim]]] = {
    "sqlite": claims.claim_sqlite,
    "postgres": claims_postgres.claim_postgres,
}


def claim(conn: Connection, owner: str, now: int, lease_ms: int, limit: int) -> list[Claim]:
    """Lease up to ``limit`` due deliveries for ``owner`` until ``now + lease_ms``, with the
    claim of ``conn``'s engine."""
    return CLAIM_BY_DIALECT[conn.dialect.name](conn, owner, now, lease_ms, limit)


def record_then_claim(
    conn: Connection,
    results: list[Result],
    now: int,
    disable_cutoff: int,
    owner: str,
    lease_ms: int,
    limit: int,
) -> tuple[list[str], list[Claim]]:
    """Record ``results``, then :func:`claim` up to ``limit`` more, in one transaction (a
    steady stream costs one commit per batch); the endpoints disabled and the new claims."""
    # On PostgreSQL a batch of successes and the claim after it go in one pipeline, with the
    # COMMIT when this write is alone in its transaction: one round trip, and the endpoint
    # rows the claim locks are held for no longer. Failures read before they write, so their
    # claim waits for them. Nothing after a together-pipeline can fail: it decodes, and signs
    # with secrets that were parsed or set aside (claims.prepare never raises for a bad one).
    together = limit and conn.dialect.name == "postgres" and records.all_delivered(results)
    started = None
    if results or together:
        with conn.pipeline(final=bool(together)):
            if results:
                records.record_outcomes(conn, results, now)
            if together:
                started = claims_postgres.start_claim(conn, owner, now, lease_ms, limit)
    disabled = records.record_failures(conn, results, now, disable_cutoff) if results else []
    if started is not None:
        return disabled, claims_postgres.claims_from(started.fetchall(), owner, now)
    return disabled, claim(conn, owner, now, lease_ms, limit) if limit else []


class DeliveryStore(Facade):
    """Deliveries in one database; use as ``async with DeliveryStore(db)``, or over a
    database a :class:`~convhook.store.producer.ProducerStore` opened already."""

    def watch(self, callback: Callable[[], None]) -> Unwatch | None:
        """Call ``callback`` (from any thread) when another process may have queued
        deliveries, until the returned function is called; None if this engine cannot tell
        (then poll)."""
        return self.db.watch(CHANNEL, callback, table="deliveries")

    # -- endpoints -----------------------------------------------------------------------

    async def create_endpoint(
        self,
        *,
        endpoint_id: str,
        workspace_id: str,
        url: str,
        secret: str,
        now: int,
        description: str = "",
        event_types: list[str] | None = None,
        enabled: bool = True,
        rate_limit: float | None = None,
        max_in_flight: int = 10,
    ) -> Endpoint:
        """Add an endpoint; it receives the events recorded from now on."""
        return await self.db.write(
            endpoints.create,
            endpoint_id,
            workspace_id,
            url,
            secret,
            now,
            description,
            event_types,
            enabled,
            rate_limit,
            max_in_flight,
        )

    async def get_endpoint(self, workspace_id: str, endpoint_id: str) -> Endpoint | None:
        """The endpoint, or None if this workspace has none by that id."""
        return await self.db.read(endpoints.get, workspace_id, endpoint_id)

    async def list_endpoints(
        self, workspace_id: str, *, limit: int = 100, after: str | None = None
    ) -> list[Endpoint]:
        """The workspace's endpoints in id order, ``limit`` after id ``after``."""
        return await self.db.read(endpoints.list_, workspace_id, limit, after)

    async def update_endpoint(
        self, workspace_id: str, endpoint_id: str, now: int, changes: dict[str, Any]
    ) -> Endpoint | None:
        """Change the given fields; None if there is no such endpoint."""
        return await self.db.write(endpoints.update, workspace_id, endpoint_id, now, changes)

    async def set_enabled(
        self, workspace_id: str, endpoint_id: str, enabled: bool, now: int
    ) -> Endpoint | None:
        """Enable or disable (failing its waiting deliveries); None if there is none."""
        return await self.db.write(endpoints.set_enabled, workspace_id, endpoint_id, enabled, now)

    async def rotate_secret(
        self, workspace_id: str, endpoint_id: str, secret: str, now: int, grace_ms: int
    ) -> Endpoint | None:
        """Make ``secret`` current, the old one signing for ``grace_ms`` more."""
        return await self.db.write(
            endpoints.rotate_secret, workspace_id, endpoint_id, secret, now, grace_ms
        )

    async def delete_endpoint(self, workspace_id: str, endpoint_id: str) -> bool:
        """Remove the endpoint with its delivery log; False if there was none."""
        return await self.db.write(endpoints.delete, workspace_id, endpoint_id)

    # -- deliveries ----------------------------------------------------------------------

    async def of_event(self, workspace_id: str, event_id: str) -> list[Delivery]:
        """Every delivery of one event, each with its attempts."""
        return await self.db.read(log.of_event, workspace_id, event_id)

    async def event_known(self, workspace_id: str, event_id: str) -> bool:
        """Whether the workspace has this event (recorded, or sent as a test)."""
        return await self.db.read(log.event_known, workspace_id, event_id)

    async def get_delivery(self, workspace_id: str, delivery_id: int) -> Delivery | None:
        """One delivery with its attempts, or None."""
        return await self.db.read(log.get, workspace_id, delivery_id)

    async def of_endpoint(
        self,
        workspace_id: str,
        endpoint_id: str,
        *,
        status: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[Delivery]:
        """An endpoint's deliveries, newest first, ``limit`` before id ``before``."""
        return await self.db.read(log.of_endpoint, workspace_id, endpoint_id, status, limit, before)

    async def redeliver(
        self, workspace_id: str, event_id: str, endpoint_ids: list[str] | None, now: int
    ) -> int:
        """Send an event again (to these endpoints, or all it went to); return how many."""
        return await self.db.write(records.redeliver, workspace_id, event_id, endpoint_ids, now)

    async def recover(self, workspace_id: str, endpoint_id: str, since: int, now: int) -> int:
        """Retry the endpoint's failed deliveries created at or after ``since``."""
        return await self.db.write(records.recover, workspace_id, endpoint_id, since, now)

    async def enqueue_test(
        self,
        *,
        workspace_id: str,
        endpoint_id: str,
        event_id: str,
        event_type: str,
        body: bytes,
        now: int,
        conversation_id: str,
    ) -> int:
        """Queue a test event for one endpoint; return its delivery id. ``conversation_id``
        is the sample conversation the body names (the sample exists nowhere else)."""
        return await self.db.write(
            records.enqueue_test,
            workspace_id,
            endpoint_id,
            event_id,
            event_type,
            body,
            now,
            conversation_id,
        )

    async def backlog(self, now: int) -> Backlog:
        """What waits, per endpoint, now (for ``/metrics``)."""
        return await self.db.read(log.backlog, now)

    async def attempts_after(
        self, after: int, *, workspace_id: str | None = None, limit: int = 500
    ) -> list[AttemptLine]:
        """Attempts with an id above ``after``, oldest first."""
        return await self.db.read(log.attempts_after, after, workspace_id, limit)

    async def last_attempt_id(self) -> int:
        """The id of the newest attempt (0 when there is none)."""
        return await self.db.read(log.last_attempt_id)

    async def attempt_ids_issued(self) -> int:
        """The highest attempt id ever given out, deleted attempts included."""
        return await self.db.read(log.attempt_ids_issued)

    # -- the dispatcher --------------------------------------------------------------------

    async def has_due(self, now: int) -> bool:
        """Whether anything is due to claim (a read: takes no write lock)."""
        return await self.db.read(claims.has_due, now)

    async def claim(self, owner: str, now: int, lease_ms: int, limit: int) -> list[Claim]:
        """Lease up to ``limit`` due deliveries for ``owner`` until ``now + lease_ms``."""
        return await self.db.write(claim, owner, now, lease_ms, limit)

    async def record(
        self,
        results: Sequence[Result],
        now: int,
        disable_cutoff: int,
        owner: str,
        lease_ms: int,
        limit: int,
    ) -> tuple[list[str], list[Claim]]:
        """Record ``results`` (disabling endpoints failing since ``disable_cutoff`` or
        earlier), then claim up to ``limit`` more, in one transaction; return the endpoints
        disabled and the new claims."""
        return await self.db.write(
            record_then_claim,
            list(results),
            now,
            disable_cutoff,
            owner,
            lease_ms,
            limit,
        )
