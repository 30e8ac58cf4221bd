"""Claims leave the writer signed and with their span's ``traceparent`` (SQLite and PostgreSQL,
writer thread and writer process); the dispatcher sends them as they are, and signs again a
claim that waited longer than :data:`~convhook.dispatcher.RESIGN_AFTER` before its request."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from convhook import tracing
from convhook.dispatcher import RESIGN_AFTER, Dispatcher
from convhook.signing import Secret, Verifier
from convhook.store import open_database
from convhook.store.delivery.claims import Claim
from convhook.store.delivery.store import DeliveryStore
from convhook.store.engine.database import Database
from tests.support.delivery import Receiver, add_endpoint, add_workspace, record_event
from tests.support.servers import serve_app

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A producer database on both engines (the test's own writes run here)."""
    async with open_database(
        database_url, "producer", synchronous="NORMAL", auto_upgrade=True
    ) as database:
        yield database


@pytest.fixture(params=["thread", "process"])
async def claiming(
    db: Database, database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Database]:
    """The database claims are made through: ``db`` itself (a writer thread), or the same
    database opened again with its writer in a child process."""
    if request.param == "thread":
        yield db
        return
    async with open_database(database_url, "producer", writer="process") as database:
        yield database


class _Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


# What _WaitingStore puts in place of the writer's signature and traceparent, so the request
# shows which ones it carried.
MARK_SIGNATURE = "v1,cHJlcGFyZWQgYnkgdGhlIHdyaXRlcg=="
MARK_TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _WaitingStore(DeliveryStore):
    """Every claim it hands out waits ``wait`` seconds (of the clock) before it is sent, with
    its prepared signature and traceparent marked."""

    def __init__(self, db: Database, clock: _Clock, wait: float) -> None:
        super().__init__(db)
        self.clock, self.wait = clock, wait
        self.claims: list[Claim] = []

    async def claim(self, owner: str, now: int, lease_ms: int, limit: int) -> list[Claim]:
        claims = await super().claim(owner, now, lease_ms, limit)
        for claim in claims:
            assert claim.signature
            assert claim.trace_header
            claim.signature, claim.trace_header = MARK_SIGNATURE, MARK_TRACE
        self.claims += claims
        self.clock.now += self.wait
        return claims


async def _event(db: Database, url: str, secret: str, traceparent: str | None) -> None:
    now = int(time.time() * 1000)
    ws = await db.write(add_workspace)
    await db.write(lambda c: add_endpoint(c, ws, url, secret, now))
    await db.write(lambda c: record_event(c, ws, "conv_1", 1, "conversation.userJoined", now))
    if traceparent is not None:
        await db.write(lambda c: c.execute("UPDATE events SET traceparent = ?", (traceparent,)))


def _headers(claim: Claim) -> dict[str, str]:
    return {
        "webhook-id": claim.event_id,
        "webhook-timestamp": str(claim.signed_at),
        "webhook-signature": claim.signature,
    }


@pytest.mark.parametrize("stored", [TRACE, None])
async def test_a_claim_comes_signed_and_with_its_traceparent(
    db: Database, claiming: Database, stored: str | None
) -> None:
    """The claim's signature verifies at the claim's time with the endpoint's secret, and its
    traceparent continues the event's stored trace under a new span (a new trace without
    one)."""
    secret = str(Secret.generate())
    await _event(db, "http://127.0.0.1:9/hook", secret, stored)
    now = int(time.time() * 1000)
    (claim,) = await DeliveryStore(claiming).claim("w", now, 60_000, 10)
    assert claim.signed_at == now // 1000
    verify = Verifier(secret, clock=lambda: claim.signed_at)
    assert verify.verify(_headers(claim), claim.body) == claim.event_id
    span = tracing.parse(claim.trace_header)
    if stored is None:
        assert span.flags == "01"
    else:
        parent = tracing.parse(stored)
        assert (span.trace_id, span.flags) == (parent.trace_id, parent.flags)
        assert span.span_id != parent.span_id


async def test_an_unreadable_secret_leaves_the_claim_unsigned(
    db: Database, claiming: Database
) -> None:
    """A stored secret that cannot be parsed gives a claim with no signature: the sender
    tries and records why it cannot (test_writer_process covers that attempt)."""
    await _event(db, "http://127.0.0.1:9/hook", str(Secret.generate()), None)
    await db.write(lambda c: c.execute("UPDATE endpoints SET secret = 'whsec_!!'"))
    (claim,) = await DeliveryStore(claiming).claim("w", int(time.time() * 1000), 60_000, 10)
    assert (claim.signature, claim.signed_at) == ("", 0)
    assert tracing.parse(claim.trace_header)


@pytest.mark.parametrize("wait", [0.0, RESIGN_AFTER + 5, -5.0])
async def test_the_request_is_signed_at_its_own_time(
    db: Database, claiming: Database, wait: float
) -> None:
    """Sent at once, the request carries the claim's signature, timestamp and traceparent as
    the writer made them; sent after waiting longer than RESIGN_AFTER, or by a clock that
    stepped back meanwhile, it is signed again with the time of sending (and verifies then),
    and keeps the writer's traceparent."""
    secret = str(Secret.generate())
    receiver = Receiver()
    async with serve_app(receiver) as base:
        await _event(db, base + "/hook", secret, TRACE)
        clock = _Clock()  # the event is due by now
        store = _WaitingStore(claiming, clock, wait)
        dispatcher = Dispatcher(store, allow_private=True, clock=clock)
        await dispatcher.open()
        try:
            await dispatcher.run_once()
        finally:
            await dispatcher.close()
    (got,) = receiver.received
    (claim,) = store.claims
    assert got.headers["traceparent"] == MARK_TRACE
    sent_at = int(got.headers["webhook-timestamp"])
    if not wait:
        assert (sent_at, got.headers["webhook-signature"]) == (claim.signed_at, MARK_SIGNATURE)
        return
    assert sent_at == int(clock.now) == claim.signed_at + int(wait)
    headers: dict[str, Any] = got.headers
    assert Verifier(secret, clock=clock).verify(headers, got.body) == claim.event_id


async def test_a_claim_during_a_rotation_is_signed_with_both_secrets(
    db: Database, claiming: Database
) -> None:
    """While the previous secret is still valid, the claim's signature holds one entry per
    secret, and each secret alone verifies it."""
    new, old = str(Secret.generate()), str(Secret.generate())
    await _event(db, "http://127.0.0.1:9/hook", new, None)
    now = int(time.time() * 1000)
    await db.write(
        lambda c: c.execute(
            "UPDATE endpoints SET previous_secret = ?, previous_secret_expires_at = ?",
            (old, now + 3_600_000),
        )
    )
    (claim,) = await DeliveryStore(claiming).claim("w", now, 60_000, 10)
    assert len(claim.signature.split()) == 2
    for secret in (new, old):
        verify = Verifier(secret, clock=lambda: claim.signed_at)
        assert verify.verify(_headers(claim), claim.body) == claim.event_id
