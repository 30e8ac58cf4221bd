"""Receiver faults and their handling, timed with an injected clock (no sleeping for retries)."""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from convhook.dispatcher import Dispatcher
from convhook.retry import RetryPolicy
from convhook.signing import Secret, Verifier
from convhook.store import open_database
from convhook.store.delivery import DeliveryStore
from convhook.store.delivery import endpoints as endpoint_store
from convhook.store.delivery import log as delivery_log
from convhook.store.engine.database import Database
from tests.support.delivery import (
    LIFECYCLE,
    FakeClock,
    Receiver,
    Reply,
    add_endpoint,
    add_workspace,
    record_event,
)
from tests.support.postgres import TemporaryPostgres
from tests.support.servers import free_port, serve_app

POLICY = RetryPolicy(jitter=lambda: 0.5)  # no jitter: delays are exactly the schedule


# The database each test database's dispatcher writes through: for "sqlite-writer-process",
# the same file opened again with its writer in a child process (as `convhook dispatcher`
# does beside `convhook serve`); otherwise the database itself.
_DISPATCH_DB: weakref.WeakKeyDictionary[Database, Database] = weakref.WeakKeyDictionary()


@pytest.fixture(params=["sqlite", "sqlite-writer-process", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A producer database with delivery tables: SQLite (its dispatcher writing on a thread,
    or in a child process) and PostgreSQL."""
    if request.param == "postgres":
        server: TemporaryPostgres = request.getfixturevalue("pg_server")
        url = server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    else:
        url = str(tmp_path / "convhook.db")
    async with open_database(url, "producer", synchronous="NORMAL", auto_upgrade=True) as database:
        if request.param != "sqlite-writer-process":
            yield database
            return
        async with open_database(
            url, "producer", synchronous="NORMAL", writer="process"
        ) as writing:
            _DISPATCH_DB[database] = writing
            yield database


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when the test says."""
    return FakeClock(time.time())


class Setup:
    """One workspace, one endpoint and a dispatcher on the fake clock."""

    def __init__(self, db: Database, clock: FakeClock, **options: object) -> None:
        self.db = db
        self.clock = clock
        self.secret = str(Secret.generate())
        self.dispatcher = Dispatcher(
            _DISPATCH_DB.get(db, db),
            allow_private=options.pop("allow_private", True),
            policy=POLICY,
            clock=clock,
            **options,  # type: ignore[arg-type]
        )
        self.ws = ""
        self.endpoint = ""

    async def start(self, url: str, **endpoint_options: object) -> None:
        now = self.ms
        self.ws = await self.db.write(add_workspace)
        self.endpoint = await self.db.write(
            lambda c: add_endpoint(c, self.ws, url, self.secret, now, **endpoint_options)
        )
        await self.dispatcher.open()

    @property
    def ms(self) -> int:
        return int(self.clock() * 1000)

    async def event(self, conversation: str = "conv_1", seq: int = 1) -> str:
        now = self.ms
        event_id, _ = await self.db.write(
            lambda c: record_event(c, self.ws, conversation, seq, LIFECYCLE[seq - 1], now)
        )
        return event_id

    async def delivery(self, event_id: str) -> delivery_log.Delivery:
        [found] = await self.db.read(lambda c: delivery_log.of_event(c, self.ws, event_id))
        return found

    async def endpoint_row(self) -> endpoint_store.Endpoint:
        found = await self.db.read(lambda c: endpoint_store.get(c, self.ws, self.endpoint))
        assert found is not None
        return found


@pytest.fixture
async def setup(db: Database, clock: FakeClock) -> AsyncIterator[Setup]:
    """A ready workspace and dispatcher; closed afterwards."""
    s = Setup(db, clock)
    yield s
    await s.dispatcher.close()


async def test_500_is_retried_after_five_seconds(setup: Setup) -> None:
    """A 500 schedules the second attempt 5 s later; it is not sent earlier, and succeeds."""
    receiver = Receiver().then(Reply(500, body=b"boom"))
    async with serve_app(receiver) as base:
        await setup.start(base)
        event_id = await setup.event()
        [first] = await setup.dispatcher.run_once()
        assert first.status_code == 500
        d = await setup.delivery(event_id)
        assert (d.status, d.attempts, d.next_attempt_at) == ("pending", 1, setup.ms + 5000)
        setup.clock.advance(4.9)
        assert await setup.dispatcher.run_once() == []
        setup.clock.advance(0.1)
        [second] = await setup.dispatcher.run_once()
        assert second.status_code == 200
    d = await setup.delivery(event_id)
    assert d.status == "delivered"
    assert [(a.status_code, a.response_body) for a in d.attempt_log] == [
        (500, "boom"),
        (200, "Webhook received successfully"),
    ]
    assert all(a.latency_ms > 0 for a in d.attempt_log)


async def test_receiver_down_then_back(setup: Setup) -> None:
    """A refused connection is logged and retried; once the receiver is up it is delivered."""
    port = free_port()
    await setup.start(f"http://127.0.0.1:{port}/hook")
    event_id = await setup.event()
    [down] = await setup.dispatcher.run_once()
    assert down.status_code is None
    assert down.error
    receiver = Receiver()
    async with serve_app(receiver, port=port):
        setup.clock.advance(5)
        [up] = await setup.dispatcher.run_once()
        assert up.status_code == 200
    d = await setup.delivery(event_id)
    assert d.status == "delivered"
    assert [a.status_code for a in d.attempt_log] == [None, 200]
    assert d.attempt_log[0].error
    assert receiver.received[0].headers["webhook-id"] == event_id


async def test_timeout_waits_at_least_a_minute(db: Database, clock: FakeClock) -> None:
    """A request past the timeout is a failed attempt retried no sooner than 60 s later."""
    s = Setup(db, clock, timeout=0.3)
    receiver = Receiver().then(Reply(200, delay=1.0))
    try:
        async with serve_app(receiver) as base:
            await s.start(base)
            event_id = await s.event()
            [result] = await s.dispatcher.run_once()
    finally:
        await s.dispatcher.close()
    assert result.error is not None
    assert "timed out" in result.error
    d = await s.delivery(event_id)
    assert d.next_attempt_at == s.ms + 60_000


async def test_429_honours_retry_after(setup: Setup) -> None:
    """A 429 with Retry-After: 120 is retried 120 s later."""
    receiver = Receiver().then(Reply(429, headers=(("retry-after", "120"),)))
    async with serve_app(receiver) as base:
        await setup.start(base)
        event_id = await setup.event()
        await setup.dispatcher.run_once()
        d = await setup.delivery(event_id)
        assert (d.status, d.last_status_code, d.next_attempt_at) == (
            "pending",
            429,
            setup.ms + 120_000,
        )
        setup.clock.advance(119)
        assert await setup.dispatcher.run_once() == []
        setup.clock.advance(1)
        assert len(await setup.dispatcher.run_once()) == 1


async def test_410_disables_the_endpoint(setup: Setup) -> None:
    """410 Gone fails the delivery, disables the endpoint and fails its waiting deliveries."""
    receiver = Receiver().then(Reply(410))
    async with serve_app(receiver) as base:
        await setup.start(base)
        first = await setup.event("conv_1")
        await setup.dispatcher.run_once()
        endpoint = await setup.endpoint_row()
        later = await setup.event("conv_2")  # the endpoint is disabled: no delivery at all
    assert not endpoint.enabled
    assert endpoint.disabled_reason is not None
    assert "410" in endpoint.disabled_reason
    assert (await setup.delivery(first)).status == "failed"
    assert await setup.db.read(lambda c: delivery_log.of_event(c, setup.ws, later)) == []


async def test_301_is_a_failure_and_not_followed(setup: Setup) -> None:
    """A redirect counts as a failed attempt and the Location is not requested."""
    receiver = Receiver().then(Reply(301, headers=(("location", "/elsewhere"),)))
    async with serve_app(receiver) as base:
        await setup.start(base + "/hook")
        event_id = await setup.event()
        await setup.dispatcher.run_once()
    d = await setup.delivery(event_id)
    assert (d.status, d.last_status_code) == ("pending", 301)
    assert [r.path for r in receiver.received] == ["/hook"]


async def test_last_attempt_fails_and_is_redeliverable(db: Database, clock: FakeClock) -> None:
    """After the schedule is spent the delivery is failed; redeliver and recover queue it again."""
    s = Setup(db, clock)
    s.dispatcher.policy = RetryPolicy(schedule=(0, 5), jitter=lambda: 0.5)
    receiver = Receiver().then(Reply(500), Reply(500))
    try:
        async with serve_app(receiver) as base:
            await s.start(base)
            event_id = await s.event()
            await s.dispatcher.run_once()
            clock.advance(5)
            await s.dispatcher.run_once()
            assert (await s.delivery(event_id)).status == "failed"
            count = await DeliveryStore(db).redeliver(s.ws, event_id, None, s.ms)
            assert count == 1
            [again] = await s.dispatcher.run_once()
            assert again.status_code == 200
            assert (await s.delivery(event_id)).status == "delivered"
            # recover only touches failed deliveries since the given time
            receiver.then(Reply(500), Reply(500))
            other = await s.event("conv_2")
            await s.dispatcher.run_once()
            clock.advance(5)
            await s.dispatcher.run_once()
            recovered = await DeliveryStore(db).recover(s.ws, s.endpoint, s.ms - 60_000, s.ms)
            assert recovered == 1
            await s.dispatcher.run_once()
            assert (await s.delivery(other)).status == "delivered"
    finally:
        await s.dispatcher.close()
    assert len((await s.delivery(other)).attempt_log) == 3


async def test_endpoint_failing_for_five_days_is_disabled(setup: Setup) -> None:
    """Continuous failures for five days disable the endpoint; a success in between resets it."""
    port = free_port()
    await setup.start(f"http://127.0.0.1:{port}/")
    await setup.event("conv_1")
    await setup.dispatcher.run_once()
    assert (await setup.endpoint_row()).failing_since == setup.ms
    setup.clock.advance(5 * 86400 - 10)
    await setup.event("conv_2")
    await setup.dispatcher.run_once()
    assert (await setup.endpoint_row()).enabled
    setup.clock.advance(20)
    await setup.event("conv_3")
    await setup.dispatcher.run_once()
    endpoint = await setup.endpoint_row()
    assert not endpoint.enabled
    assert "failing" in (endpoint.disabled_reason or "")


async def test_secret_rotation_grace(setup: Setup) -> None:
    """During the grace period both secrets sign; afterwards only the new one does."""
    receiver = Receiver()
    async with serve_app(receiver) as base:
        await setup.start(base)
        old = setup.secret
        new = str(Secret.generate())
        now = setup.ms
        await setup.db.write(
            lambda c: endpoint_store.rotate_secret(c, setup.ws, setup.endpoint, new, now, 3_600_000)
        )
        await setup.event("conv_1")
        await setup.dispatcher.run_once()
        setup.clock.advance(3601)
        await setup.event("conv_2")
        await setup.dispatcher.run_once()
    during, after = receiver.received
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    ts = int(during.headers["webhook-timestamp"])
    Verifier(old, clock=lambda: ts).verify(during.headers, during.body)
    Verifier(new, clock=lambda: ts).verify(during.headers, during.body)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    ts = int(after.headers["webhook-timestamp"])
    Verifier(new, clock=lambda: ts).verify(after.headers, after.body)
    with pytest.raises(Exception, match="no webhook-signature entry matches"):
        Verifier(old, clock=lambda: ts).verify(after.headers, after.body)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_private_target_refused_at_connect_time(
    db: Database, clock: FakeClock, host: str
) -> None:
    """Without allow_private a name resolving to 127.0.0.1 (or the literal) is never dialled."""
    s = Setup(db, clock, allow_private=False)
    receiver = Receiver()
    try:
        async with serve_app(receiver) as base:
            port = base.rsplit(":", 1)[1]
            await s.start(f"http://{host}:{port}/hook")
            event_id = await s.event()
            [result] = await s.dispatcher.run_once()
    finally:
        await s.dispatcher.close()
    assert receiver.received == []
    assert result.error is not None
    assert "refusing" in result.error
    assert "loopback" in result.error
    assert (await s.delivery(event_id)).last_error == result.error


async def test_secrets_and_urls_never_logged(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """Log records of successes and failures carry ids and actions, never the secret or URL."""
    caplog.set_level("DEBUG", logger="convhook")
    receiver = Receiver().then(Reply(500))
    async with serve_app(receiver) as base:
        await setup.start(base + "/hook?token=sensitive")
        await setup.event("conv_1")
        await setup.dispatcher.run_once()
        setup.clock.advance(5)
        await setup.dispatcher.run_once()
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert "delivery_retry_scheduled" in actions
    assert "delivery_succeeded" in actions
    for record in caplog.records:
        text = repr(record.__dict__)
        assert setup.secret not in text
        assert setup.secret.removeprefix("whsec_") not in text
        assert "sensitive" not in text


async def test_endpoint_deleted_during_request(setup: Setup) -> None:
    """Deleting an endpoint while its request runs loses nothing else in the same batch."""
    receiver = Receiver().then(Reply(200, delay=0.3))
    async with serve_app(receiver) as base:
        await setup.start(base)
        await setup.event("conv_1")
        running = asyncio.ensure_future(setup.dispatcher.run_once())
        await receiver.wait_for(1)
        ws, ep = setup.ws, setup.endpoint
        assert await setup.db.write(lambda c: endpoint_store.delete(c, ws, ep))
        [result] = await running
    assert result.status_code == 200
    count = await setup.db.read(lambda c: c.execute("SELECT count(*) FROM attempts").fetchone()[0])
    assert count == 0


async def test_pruned_event_is_not_redelivered(setup: Setup) -> None:
    """An event whose payload the retention job removed is not sent again (no empty body)."""
    receiver = Receiver()
    async with serve_app(receiver) as base:
        await setup.start(base)
        event_id = await setup.event()
        await setup.dispatcher.run_once()
        await setup.db.write(lambda c: c.execute("UPDATE events SET body = ''"))
        ws, ep = setup.ws, setup.endpoint
        store = DeliveryStore(setup.db)
        assert await store.redeliver(ws, event_id, None, 0) == 0
        assert await store.redeliver(ws, event_id, [ep], 0) == 0
    assert len(receiver.received) == 1
