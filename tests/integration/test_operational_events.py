"""Operational events (endpoint.disabled, endpoint.enabled, delivery.failed,
endpoint.recovered) recorded in the outbox with the change that causes them and delivered by
the real dispatcher to real HTTP receivers that list them, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from convhook.api import ApiSettings, create_app
from convhook.dispatcher import Dispatcher
from convhook.events import (
    DeliveryFailed,
    EndpointDisabled,
    EndpointEnabled,
    EndpointRecovered,
    OperationalEventType,
    UserJoined,
    parse_event,
)
from convhook.receiver import HandlerStatus
from convhook.retry import RetryPolicy, Verdict
from convhook.samples import sample_event
from convhook.signing import Secret, sign
from convhook.store.delivery import DeliveryStore, operational
from convhook.store.delivery.records import Result
from convhook.store.producer import ProducerStore
from tests.support.delivery import Receiver, Reply, add_endpoint, record_event
from tests.support.inbox import receiver_at
from tests.support.servers import eventually, serve_app

OPERATIONAL = ["endpoint.disabled", "endpoint.enabled", "endpoint.recovered", "delivery.failed"]
FAST = RetryPolicy(schedule=(0, 0.05), jitter=lambda: 0.5)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[ProducerStore]:
    """A producer store on SQLite and on PostgreSQL."""
    producer = ProducerStore.at(database_url, auto_upgrade=True)
    await producer.open()
    try:
        yield producer
    finally:
        await producer.close()


def _now() -> int:
    return int(time.time() * 1000)


async def _endpoint(
    store: ProducerStore, workspace_id: str, url: str, types: list[str] | None
) -> str:
    secret = str(Secret.generate())
    return await store.db.write(
        lambda c: add_endpoint(c, workspace_id, url, secret, _now(), event_types=types)
    )


async def _transition(session: aiohttp.ClientSession, base: str, conv: str, action: str) -> None:
    async with session.post(f"{base}/api/v2/conversations/{conv}/{action}") as r:
        assert r.status == 200, await r.text()


async def _conversation(session: aiohttp.ClientSession, base: str) -> str:
    async with session.post(f"{base}/api/v2/conversations", json={"agentId": "a"}) as r:
        assert r.status in (200, 201), await r.text()
        conv: str = (await r.json())["id"]
    return conv


async def _rows(store: ProducerStore, subject: str) -> list[Any]:
    """The stored events filed under ``subject``, in sequence order."""
    return await store.db.read(
        lambda c: c.execute(
            "SELECT id, event_type, conversation_seq, previous_event_id, body FROM events "
            "WHERE conversation_id = ? ORDER BY conversation_seq",
            (subject,),
        ).fetchall()
    )


async def _settle(dispatcher: Dispatcher, seconds: float = 0.4) -> None:
    """Let the dispatcher run a while longer: what it would still send arrives meanwhile."""
    dispatcher.wake()
    await asyncio.sleep(seconds)


async def test_a_410_disables_and_an_api_enable_enables_as_events_at_a_subscriber(
    store: ProducerStore,
) -> None:
    """A 410 disables its endpoint and endpoint.disabled reaches the endpoint that lists it,
    then enabling through the API sends endpoint.enabled, in the endpoint's own sequence; an
    endpoint subscribed to every type (null) gets only the conversation event."""
    workspace, key = await store.create_workspace("w")
    gone, alerts, everything = (
        Receiver().then(Reply(status=410)),
        Receiver(),
        Receiver(),
    )
    app = create_app(store, ApiSettings())
    async with (
        serve_app(gone) as gone_url,
        serve_app(alerts) as alerts_url,
        serve_app(everything) as all_url,
        serve_app(app) as base,
        aiohttp.ClientSession(headers={"x-api-key": key}) as session,
        Dispatcher(store.db, allow_private=True, policy=FAST) as dispatcher,
    ):
        target = await _endpoint(store, workspace.id, gone_url + "/hook", None)
        await _endpoint(store, workspace.id, alerts_url + "/hook", OPERATIONAL[:2])
        await _endpoint(store, workspace.id, all_url + "/hook", None)
        conv = await _conversation(session, base)
        await _transition(session, base, conv, "join")
        dispatcher.wake()
        (first,) = await alerts.wait_for(1)
        async with session.post(f"{base}/api/v2/endpoints/{target}/enable") as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["enabled"] is True
        dispatcher.wake()
        _, second = await alerts.wait_for(2)
        await _settle(dispatcher)
        # Read before the app's shutdown closes the store.
        rows = await _rows(store, target)
    disabled = parse_event(first.body)
    assert isinstance(disabled, EndpointDisabled)
    assert disabled.payload.endpoint_id == target
    assert disabled.payload.workspace_id == workspace.id
    assert disabled.payload.url == gone_url + "/hook"
    assert disabled.payload.enabled is False
    assert "410" in (disabled.payload.disabled_reason or "")
    enabled = parse_event(second.body)
    assert isinstance(enabled, EndpointEnabled)
    assert enabled.payload.enabled is True
    assert enabled.payload.disabled_reason is None
    # The 410 also ended its delivery failed: delivery.failed is the endpoint's event 1.
    assert [first.headers["convhook-sequence"], second.headers["convhook-sequence"]] == ["2", "3"]
    assert second.headers["convhook-previous-event-id"] == disabled.event_id
    assert [r.event["eventType"] for r in everything.received] == ["conversation.userJoined"]
    assert len(alerts.received) == 2
    assert [(r["event_type"], r["conversation_seq"]) for r in rows] == [
        ("delivery.failed", 1),
        ("endpoint.disabled", 2),
        ("endpoint.enabled", 3),
    ]
    assert first.headers["convhook-previous-event-id"] == rows[0]["id"]
    assert [r["previous_event_id"] for r in rows] == [None, rows[0]["id"], rows[1]["id"]]
    assert [json.loads(r["body"]) for r in rows[1:]] == [first.event, second.event]


async def test_spent_retries_send_delivery_failed_then_a_success_sends_recovered(
    store: ProducerStore,
) -> None:
    """A delivery whose retries run out sends delivery.failed naming it; the endpoint's next
    success sends endpoint.recovered with when its failures began; bodies as the models write
    them."""
    workspace, key = await store.create_workspace("w")
    flaky = Receiver().then(Reply(status=500), Reply(status=503))
    alerts = Receiver()
    app = create_app(store, ApiSettings())
    async with (
        serve_app(flaky) as flaky_url,
        serve_app(alerts) as alerts_url,
        serve_app(app) as base,
        aiohttp.ClientSession(headers={"x-api-key": key}) as session,
        Dispatcher(store.db, allow_private=True, policy=FAST) as dispatcher,
    ):
        target = await _endpoint(store, workspace.id, flaky_url + "/hook", None)
        await _endpoint(
            store, workspace.id, alerts_url + "/hook", ["delivery.failed", "endpoint.recovered"]
        )
        conv = await _conversation(session, base)
        await _transition(session, base, conv, "join")
        dispatcher.wake()
        (failed_at,) = await alerts.wait_for(1)
        await _transition(session, base, conv, "leave")
        dispatcher.wake()
        _, recovered_at = await alerts.wait_for(2)
        await _settle(dispatcher)
        deliveries = DeliveryStore(store.db)
        endpoint = await deliveries.get_endpoint(workspace.id, target)
        joined = await deliveries.of_event(workspace.id, flaky.received[0].event["eventId"])
    attempts = flaky.received
    assert [r.event["eventType"] for r in attempts] == [
        "conversation.userJoined",
        "conversation.userJoined",
        "conversation.userLeft",
    ]
    failed = parse_event(failed_at.body)
    assert isinstance(failed, DeliveryFailed)
    p = failed.payload
    assert p.event_id == attempts[0].event["eventId"]
    assert p.event_type == "conversation.userJoined"
    assert (p.endpoint_id, p.conversation_id, p.workspace_id) == (target, conv, workspace.id)
    assert (p.attempts, p.last_status_code) == (2, 503)
    assert p.delivery_id.startswith("dlv_")
    assert [f"dlv_{d.id}" for d in joined] == [p.delivery_id]
    recovered = parse_event(recovered_at.body)
    assert isinstance(recovered, EndpointRecovered)
    assert recovered.payload.endpoint_id == target
    assert recovered.payload.enabled is True
    assert recovered.payload.failing_since is not None
    assert recovered.payload.failing_since <= recovered.payload.at
    # The recovered body is written in SQL: exactly what the model would write.
    assert recovered_at.body == recovered.to_json()
    assert failed_at.body == failed.to_json()
    assert [r.headers["convhook-sequence"] for r in (failed_at, recovered_at)] == ["1", "2"]
    assert endpoint is not None
    assert endpoint.failing_since is None
    assert len(alerts.received) == 2


async def test_a_failed_delivery_of_an_operational_event_causes_no_delivery_failed(
    store: ProducerStore,
) -> None:
    """A subscriber that fails every delivery of operational events gets no delivery.failed
    about them (nothing feeds itself); the conversation delivery that ended in a 410 does."""
    workspace, key = await store.create_workspace("w")
    gone = Receiver().then(Reply(status=410))
    broken = Receiver().then(*[Reply(status=500)] * 10)
    watcher = Receiver()
    app = create_app(store, ApiSettings())
    async with (
        serve_app(gone) as gone_url,
        serve_app(broken) as broken_url,
        serve_app(watcher) as watcher_url,
        serve_app(app) as base,
        aiohttp.ClientSession(headers={"x-api-key": key}) as session,
        Dispatcher(store.db, allow_private=True, policy=FAST) as dispatcher,
    ):
        target = await _endpoint(store, workspace.id, gone_url + "/hook", None)
        failing = await _endpoint(store, workspace.id, broken_url + "/hook", OPERATIONAL)
        await _endpoint(store, workspace.id, watcher_url + "/hook", ["delivery.failed"])
        conv = await _conversation(session, base)
        await _transition(session, base, conv, "join")
        dispatcher.wake()
        # endpoint.disabled and delivery.failed about the 410, each tried twice.
        await broken.wait_for(4)
        await watcher.wait_for(1)
        await _settle(dispatcher, 0.6)
        about_failing = await _rows(store, failing)
        about_target = await _rows(store, target)
    (about,) = [parse_event(r.body) for r in watcher.received]
    assert isinstance(about, DeliveryFailed)
    assert about.payload.endpoint_id == target
    assert about.payload.last_status_code == 410
    assert len(broken.received) == 4
    assert about_failing == []
    types = [r["event_type"] for r in about_target]
    assert types == ["delivery.failed", "endpoint.disabled"]


async def test_failing_too_long_disables_with_one_event_for_its_waiting_deliveries(
    store: ProducerStore,
) -> None:
    """An endpoint failing longer than the policy allows is disabled and endpoint.disabled says
    since when; the delivery that disabling fails gets no delivery.failed of its own."""
    workspace, key = await store.create_workspace("w")
    failing = Receiver().then(*[Reply(status=500)] * 5)
    alerts = Receiver()
    policy = RetryPolicy(schedule=(0, 0.05, 0.05, 0.05), jitter=lambda: 0.5, disable_after=0.02)
    app = create_app(store, ApiSettings())
    async with (
        serve_app(failing) as failing_url,
        serve_app(alerts) as alerts_url,
        serve_app(app) as base,
        aiohttp.ClientSession(headers={"x-api-key": key}) as session,
        Dispatcher(store.db, allow_private=True, policy=policy) as dispatcher,
    ):
        target = await _endpoint(store, workspace.id, failing_url + "/hook", None)
        await _endpoint(store, workspace.id, alerts_url + "/hook", OPERATIONAL)
        conv = await _conversation(session, base)
        await _transition(session, base, conv, "join")
        dispatcher.wake()
        (got,) = await alerts.wait_for(1)
        await _settle(dispatcher)
        rows = await _rows(store, target)
    disabled = parse_event(got.body)
    assert isinstance(disabled, EndpointDisabled)
    assert disabled.payload.endpoint_id == target
    assert "failing without a success" in (disabled.payload.disabled_reason or "")
    assert disabled.payload.failing_since is not None
    assert disabled.payload.failing_since < disabled.payload.at
    assert len(failing.received) == 2
    assert [r["event_type"] for r in rows] == ["endpoint.disabled"]
    assert len(alerts.received) == 1


async def test_the_api_takes_operational_types_for_endpoints_and_test_events(
    store: ProducerStore,
) -> None:
    """Endpoints are created and changed with operational types in eventTypes (an unknown one
    is a 422), and a test event of an operational type reaches the endpoint typed."""
    _, key = await store.create_workspace("w")
    hook = Receiver()
    app = create_app(store, ApiSettings(allow_private_targets=True))
    async with (
        serve_app(hook) as hook_url,
        serve_app(app) as base,
        aiohttp.ClientSession(headers={"x-api-key": key}) as session,
        Dispatcher(store.db, allow_private=True, policy=FAST) as dispatcher,
    ):
        endpoints = f"{base}/api/v2/endpoints"
        types = ["conversation.completed", "endpoint.disabled", "delivery.failed"]
        body = {"url": hook_url + "/hook", "eventTypes": types}
        async with session.post(endpoints, json=body) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
        assert sorted(created["eventTypes"]) == sorted(types)
        async with session.patch(
            f"{endpoints}/{created['id']}", json={"eventTypes": ["endpoint.recovered"]}
        ) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["eventTypes"] == ["endpoint.recovered"]
        async with session.post(
            endpoints, json={"url": hook_url, "eventTypes": ["endpoint.bogus"]}
        ) as r:
            assert r.status == 422
            assert "eventTypes" in await r.text()
        async with session.post(
            f"{endpoints}/{created['id']}/test", json={"eventType": "delivery.failed"}
        ) as r:
            assert r.status == 202, await r.text()
            queued = await r.json()
        dispatcher.wake()
        (got,) = await hook.wait_for(1)
    event = parse_event(got.body)
    assert isinstance(event, DeliveryFailed)
    assert event.event_id == queued["eventId"]


async def test_concurrent_changes_of_one_endpoint_take_distinct_sequences(
    database_url: str,
) -> None:
    """Two stores (as two processes) toggling one endpoint at once record one event per change,
    numbered 1..n without a gap or a collision."""
    stores = [ProducerStore.at(database_url, auto_upgrade=True) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        workspace, _ = await stores[0].create_workspace("w")
        target = await _endpoint(stores[0], workspace.id, "http://127.0.0.1:9/hook", None)

        async def toggle(s: ProducerStore, rounds: int) -> None:
            deliveries = DeliveryStore(s.db)
            for i in range(rounds):
                await deliveries.set_enabled(workspace.id, target, i % 2 == 1, _now())

        await asyncio.gather(*(toggle(s, 20) for s in stores))
        rows = await _rows(stores[0], target)
    finally:
        for s in stores:
            await s.close()
    seqs = [r["conversation_seq"] for r in rows]
    assert seqs == list(range(1, len(rows) + 1))
    assert len(rows) >= 20
    kinds = [r["event_type"] for r in rows]
    # Each event is a change of state: they alternate.
    assert all(a != b for a, b in itertools.pairwise(kinds))


async def test_convhooks_receiver_takes_operational_events_typed(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """convhook's own receiver accepts each operational event signed as the dispatcher signs
    it and hands its handler the typed event."""
    secret = Secret.generate()
    receiver = receiver_at(database_url, secret)
    seen: list[Any] = []
    receiver.on(*OPERATIONAL)(seen.append)
    events = [sample_event(t) for t in OPERATIONAL]
    async with serve_app(receiver.asgi_app()) as url:
        for event in events:
            body = event.to_json()
            headers = {"content-type": "application/json", **sign([secret], event.event_id, body)}
            async with session.post(url + "/webhook", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()
        await eventually(lambda: len(seen) == len(events))
        for event in events:
            entry = await receiver.inbox.get(event.event_id)
            assert entry is not None
            await eventually(lambda e=event: _done(receiver, e.event_id))
    classes = [EndpointDisabled, EndpointEnabled, EndpointRecovered, DeliveryFailed]
    assert sorted(type(e).__name__ for e in seen) == sorted(c.__name__ for c in classes)
    assert not any(isinstance(e, UserJoined) for e in seen)


async def _done(receiver: Any, event_id: str) -> bool:
    entry = await receiver.inbox.get(event_id)
    return entry is not None and entry.status is HandlerStatus.DONE


async def test_racing_successes_of_one_failing_endpoint_record_one_recovered(
    database_url: str,
) -> None:
    """Two dispatchers (two stores, as two processes) recording a success to the same failing
    endpoint at once record one endpoint.recovered between them, and clear failingSince."""
    stores = [ProducerStore.at(database_url, auto_upgrade=True) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        workspace, _ = await stores[0].create_workspace("w")
        now = _now()
        target = await _endpoint(stores[0], workspace.id, "http://127.0.0.1:9/hook", None)

        def setup(conn: Any) -> None:
            conn.execute("UPDATE endpoints SET failing_since = ? WHERE id = ?", (now - 1, target))
            for i in range(2):
                record_event(conn, workspace.id, f"conv_{i}", 1, "conversation.userJoined", now)

        await stores[0].db.write(setup)
        deliveries = [DeliveryStore(s.db) for s in stores]
        claims = [
            (await d.claim(f"owner-{i}", now, 60_000, 1))[0] for i, d in enumerate(deliveries)
        ]
        assert len({c.delivery_id for c in claims}) == 2
        results = [
            Result(c.delivery_id, target, c.lease_owner, now, 200, 1.0, None, "", Verdict.DELIVERED)
            for c in claims
        ]
        await asyncio.gather(
            *(
                d.record([r], now, 0, r.lease_owner, 60_000, 0)
                for d, r in zip(deliveries, results, strict=True)
            )
        )
        rows = await _rows(stores[0], target)
        endpoint = await deliveries[0].get_endpoint(workspace.id, target)
    finally:
        for s in stores:
            await s.close()
    assert [(r["event_type"], r["conversation_seq"]) for r in rows] == [("endpoint.recovered", 1)]
    recovered = parse_event(rows[0]["body"])
    assert isinstance(recovered, EndpointRecovered)
    assert recovered.payload.failing_since is not None
    assert int(recovered.payload.failing_since.timestamp() * 1000) == now - 1
    assert rows[0]["body"].encode() == recovered.to_json()
    assert endpoint is not None
    assert endpoint.failing_since is None


async def test_a_recovered_that_waited_for_the_endpoint_names_the_event_before_it(
    pg_url: str,
) -> None:
    """On PostgreSQL an endpoint.recovered whose write waited for another process's lock on
    the endpoint names the event that process committed as its previous event."""
    stores = [ProducerStore.at(pg_url, auto_upgrade=True) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        workspace, _ = await stores[0].create_workspace("w")
        now = _now()
        target = await _endpoint(stores[0], workspace.id, "http://127.0.0.1:9/hook", None)

        def setup(conn: Any) -> None:
            conn.execute("UPDATE endpoints SET failing_since = ? WHERE id = ?", (now - 1, target))
            record_event(conn, workspace.id, "conv_1", 1, "conversation.userJoined", now)

        await stores[0].db.write(setup)
        deliveries = DeliveryStore(stores[1].db)
        (claim,) = await deliveries.claim("owner", now, 60_000, 1)
        result = Result(
            claim.delivery_id, target, "owner", now, 200, 1.0, None, "", Verdict.DELIVERED
        )

        def other_process(conn: Any) -> str | None:
            # An event about the endpoint, its row locked until this write commits.
            made = operational.endpoint_changed(
                conn, OperationalEventType.ENDPOINT_ENABLED, target, now
            )
            time.sleep(0.5)
            return made

        holding = asyncio.create_task(stores[0].db.write(other_process))
        await asyncio.sleep(0.2)
        await deliveries.record([result], now, 0, "owner", 60_000, 0)
        first = await holding
        rows = await _rows(stores[0], target)
    finally:
        for s in stores:
            await s.close()
    assert [r["event_type"] for r in rows] == ["endpoint.enabled", "endpoint.recovered"]
    assert rows[0]["id"] == first
    assert rows[1]["previous_event_id"] == first
