"""A receiver orders each conversation's events: gaps in convhook-sequence are recorded and,
with the producer's API configured, filled before the later event's handlers run; senders
without sequences are checked by lifecycle rank; handlers run in the delivered trace. Real
HTTP both ways (the receiver on uvicorn, the producer's API on an aiohttp server), on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from convhook import tracing
from convhook.errors import ConfigError
from convhook.events import AnyEvent
from convhook.receiver import GapKind, GapStatus, HandlerStatus, Receiver, Reconcile
from convhook.samples import sample_event
from convhook.signing import Secret, sign
from convhook.store.inbox import Gap, Progress, Received
from tests.support.inbox import WRITER_PROCESS, inbox_at, receiver_at
from tests.support.otlp import Collector, collector_fixture  # noqa: F401 - the fixture
from tests.support.postgres import TemporaryPostgres
from tests.support.servers import eventually, free_port, serve_app

SECRET = Secret.generate()
KEY = "chk_test_workspace_key"
LIFECYCLE = (
    "conversation.userJoined",
    "conversation.userLeft",
    "conversation.completed",
    "conversation.analysisCompleted",
)


def conversation(n: int = 4) -> tuple[str, list[AnyEvent]]:
    """A conversation id and its first ``n`` events, in order (sequence = index + 1)."""
    conv_id = f"conv_{uuid.uuid4().hex[:16]}"
    return conv_id, [sample_event(t, overrides={"id": conv_id}) for t in LIFECYCLE[:n]]


@dataclass
class ProducerAPI:
    """The producer's conversation events endpoint, served as the contract says, with knobs
    for outages: ``answers`` is a queue of statuses to give before the real answer."""

    events: dict[str, list[AnyEvent]] = field(default_factory=dict)
    answers: list[int] = field(default_factory=list)
    always: int | None = None
    pruned: set[int] = field(default_factory=set)
    requests: list[dict[str, str]] = field(default_factory=list)
    page: int = 500

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return web.json_response({"title": "unauthorized"}, status=401)
        if self.always is not None:
            return web.json_response({"title": "down"}, status=self.always)
        if self.answers:
            return web.json_response({"title": "down"}, status=self.answers.pop(0))
        conv_id = request.match_info["id"]
        if conv_id not in self.events:
            return web.json_response({"title": "not found"}, status=404)
        after = int(request.query.get("afterSequence", "0"))
        limit = min(self.page, int(request.query.get("limit", "100")))
        items = []
        previous = None
        for seq, event in enumerate(self.events[conv_id], start=1):
            if seq > after and len(items) < limit:
                pruned = seq in self.pruned
                wire = json.loads(event.to_json())
                if pruned:
                    wire["payload"] = None
                item: dict[str, Any] = {
                    "sequence": seq,
                    "eventId": event.event_id,
                    "eventType": event.event_type,
                    "previousEventId": previous,
                    "createdAt": "2026-12-07T10:00:00.000Z",
                    "event": wire,
                }
                if pruned:
                    item["pruned"] = True
                items.append(item)
            previous = event.event_id
        last = items[-1]["sequence"] if items else None
        more = last is not None and last < len(self.events[conv_id]) and len(items) == limit
        return web.json_response({"data": items, "nextAfterSequence": last if more else None})


@contextlib.asynccontextmanager
async def producer_api(api: ProducerAPI) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/api/v2/conversations/{id}/events", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Seen:
    """What the handler saw, per conversation, in order."""

    def __init__(self) -> None:
        self.order: dict[str, list[int | None]] = {}
        self.traces: list[tracing.TraceContext | None] = []
        self.origins: list[str] = []

    async def __call__(self, event: Any, delivery: Any) -> None:
        self.order.setdefault(delivery.conversation_id, []).append(delivery.sequence)
        self.traces.append(tracing.current())
        self.origins.append(delivery.origin)


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    event: AnyEvent,
    sequence: int | None,
    **extra: str,
) -> int:
    body = event.to_json()
    headers = {"content-type": "application/json", **sign([SECRET], event.event_id, body)}
    if sequence is not None:
        headers["convhook-sequence"] = str(sequence)
    headers.update(extra)
    async with session.post(f"{url}/webhook", data=body, headers=headers) as response:
        return response.status


def make(database_url: str, seen: Seen, **kwargs: Any) -> Receiver:
    receiver = receiver_at(database_url, SECRET, **kwargs)
    receiver.add_handler(seen, name="seen")
    return receiver


async def test_a_gap_is_filled_from_the_api_before_the_later_event_runs(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """A missing sequence is fetched, stored as reconciled and handled before the later event,
    and its late real delivery is a duplicate."""
    conv_id, events = conversation(3)
    api = ProducerAPI({conv_id: events})
    seen = Seen()
    async with producer_api(api) as api_url:
        receiver = make(database_url, seen, reconcile_url=api_url, reconcile_key=KEY)
        async with receiver, serve_app(receiver.asgi_app()) as url:
            assert await deliver(session, url, events[0], 1) == 200
            await eventually(lambda: seen.order.get(conv_id) == [1])
            assert await deliver(session, url, events[2], 3) == 200
            await eventually(lambda: seen.order.get(conv_id) == [1, 2, 3])
            assert seen.origins == ["delivery", "reconciled", "delivery"]
            # The late real delivery of sequence 2 is the same event: not handled again.
            assert await deliver(session, url, events[1], 2) == 200
            await asyncio.sleep(0.3)
            assert seen.order[conv_id] == [1, 2, 3]
            filled = await receiver.inbox.get(events[1].event_id)
            gaps = await receiver.inbox.gaps()
            counts = await receiver.inbox.gap_counts()
    assert api.requests == [{"afterSequence": "1", "limit": "1"}]
    assert filled is not None
    assert (filled.origin, filled.sequence, filled.status) == ("reconciled", 2, HandlerStatus.DONE)
    assert filled.headers["convhook-previous-event-id"] == events[0].event_id
    [gap] = gaps
    assert (gap.event_id, gap.kind, gap.status, gap.missing, gap.filled) == (
        events[2].event_id,
        GapKind.GAP,
        GapStatus.FILLED,
        "2",
        1,
    )
    assert counts == {"filled": 1}


async def test_without_the_api_a_gap_is_recorded_unfilled_and_nothing_waits(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """Without reconciling, a gap is recorded unfilled with its reason, the later event runs at
    once, and the missing event arriving afterwards is handled and recorded out of order."""
    conv_id, events = conversation(3)
    seen = Seen()
    receiver = make(database_url, seen)
    async with receiver, serve_app(receiver.asgi_app()) as url:
        await deliver(session, url, events[0], 1)
        await eventually(lambda: seen.order.get(conv_id) == [1])
        started = time.monotonic()
        await deliver(session, url, events[2], 3)
        await eventually(lambda: seen.order.get(conv_id) == [1, 3])
        assert time.monotonic() - started < 5
        await deliver(session, url, events[1], 2)
        await eventually(lambda: seen.order.get(conv_id) == [1, 3, 2])
        await eventually(lambda: _has(receiver, GapKind.OUT_OF_ORDER))
        gaps = {g.kind: g for g in await receiver.inbox.gaps()}
        counts = await receiver.inbox.gap_counts()
    gap = gaps[GapKind.GAP]
    assert (gap.status, gap.missing, gap.event_id) == (
        GapStatus.UNFILLED,
        "2",
        events[2].event_id,
    )
    assert gap.reason is not None
    assert "no producer API" in gap.reason
    late = gaps[GapKind.OUT_OF_ORDER]
    assert (late.event_id, late.status) == (events[1].event_id, GapStatus.RECORDED)
    assert counts == {"unfilled": 1, "out_of_order": 1}


async def _has(receiver: Receiver, kind: GapKind) -> bool:
    return any(g.kind is kind for g in await receiver.inbox.gaps())


async def test_an_api_that_stays_down_is_asked_with_backoff_then_the_event_runs(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """An API answering 503 is asked again with backoff, a bounded number of times, and the
    later event's handlers run once the wait has passed, the gap unfilled with the reason."""
    conv_id, events = conversation(3)
    api = ProducerAPI({conv_id: events}, always=503)
    seen = Seen()
    async with producer_api(api) as api_url:
        receiver = make(
            database_url, seen, reconcile_url=api_url, reconcile_key=KEY, reconcile_wait=2.0
        )
        async with receiver, serve_app(receiver.asgi_app()) as url:
            await deliver(session, url, events[0], 1)
            await eventually(lambda: seen.order.get(conv_id) == [1])
            started = time.monotonic()
            await deliver(session, url, events[2], 3)
            await eventually(lambda: seen.order.get(conv_id) == [1, 3], timeout=15)
            waited = time.monotonic() - started
            [gap] = await receiver.inbox.gaps()
            entry = await receiver.inbox.get(events[2].event_id)
    assert 1.5 <= waited < 8
    # 0.5 s, 1 s, then the wait's end: three or four looks, never a tight loop.
    assert 2 <= len(api.requests) <= 5
    assert gap.status is GapStatus.UNFILLED
    assert gap.reason == "the API answered 503"
    assert gap.attempts == len(api.requests)
    # Waiting did not spend the event's own attempts.
    assert entry is not None
    assert (entry.status, entry.attempts) == (HandlerStatus.DONE, 1)


async def test_an_api_that_recovers_fills_the_gap(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """After a failed request, the next look fills the gap and the events run in order."""
    conv_id, events = conversation(4)
    api = ProducerAPI({conv_id: events}, answers=[502])
    seen = Seen()
    async with producer_api(api) as api_url:
        receiver = make(database_url, seen, reconcile_url=api_url, reconcile_key=KEY)
        async with receiver, serve_app(receiver.asgi_app()) as url:
            await deliver(session, url, events[0], 1)
            await deliver(session, url, events[3], 4)
            await eventually(lambda: seen.order.get(conv_id) == [1, 2, 3, 4])
            [gap] = await receiver.inbox.gaps()
    assert (gap.status, gap.missing, gap.filled, gap.attempts) == (GapStatus.FILLED, "2-3", 2, 2)


async def test_a_gap_is_named_by_the_sequences_missing(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """Event 4 arriving while 3 waits for the gap at 2 records a gap of 2 alone: 3 is stored,
    not missing (the gap's range started at the last handled sequence, naming 2-3)."""
    conv_id, events = conversation(4)
    api = ProducerAPI({conv_id: events}, answers=[502, 502])
    seen = Seen()
    async with producer_api(api) as api_url:
        receiver = make(database_url, seen, reconcile_url=api_url, reconcile_key=KEY)
        async with receiver, serve_app(receiver.asgi_app()) as url:
            await deliver(session, url, events[0], 1)
            await eventually(lambda: seen.order.get(conv_id) == [1])
            await deliver(session, url, events[2], 3)
            await eventually(lambda: len(api.requests) >= 1)
            await deliver(session, url, events[3], 4)
            await eventually(lambda: seen.order.get(conv_id) == [1, 2, 3, 4], 30)
            gaps = {g.event_id: g for g in await receiver.inbox.gaps()}
    assert gaps[events[2].event_id].missing == "2"
    assert gaps[events[3].event_id].missing == "2"


async def test_a_long_gap_is_read_page_by_page(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """A gap longer than the API's page is read by following nextAfterSequence, and every
    missing event runs, in order, before the later one."""
    conv_id = f"conv_{uuid.uuid4().hex[:16]}"
    types = ["conversation.userJoined", *["conversation.userLeft"] * 6, "conversation.completed"]
    events = [sample_event(t, overrides={"id": conv_id}) for t in types]
    api = ProducerAPI({conv_id: events}, page=2)
    seen = Seen()
    async with producer_api(api) as api_url:
        receiver = make(database_url, seen, reconcile_url=api_url, reconcile_key=KEY)
        async with receiver, serve_app(receiver.asgi_app()) as url:
            await deliver(session, url, events[0], 1)
            await deliver(session, url, events[7], 8)
            await eventually(lambda: len(seen.order.get(conv_id, [])) == 8)
            [gap] = await receiver.inbox.gaps()
    assert seen.order[conv_id] == list(range(1, 9))
    # Pages of two from sequence 2: the last page needed ends at 7, so 8 is never asked for.
    assert [r["afterSequence"] for r in api.requests] == ["1", "3", "5"]
    assert (gap.status, gap.missing, gap.filled) == (GapStatus.FILLED, "2-7", 6)


@pytest.mark.parametrize("case", ["unknown", "pruned", "bad-key"])
async def test_a_gap_the_api_cannot_fill_is_unfilled_at_once(
    database_url: str, session: aiohttp.ClientSession, case: str
) -> None:
    """A 404, a pruned event or a refused key leave the gap unfilled with the reason, without
    waiting, and the later event runs (after the events that could be filled)."""
    conv_id, events = conversation(4)
    api = ProducerAPI({} if case == "unknown" else {conv_id: events})
    if case == "pruned":
        api.pruned = {2}
    seen = Seen()
    key = "wrong" if case == "bad-key" else KEY
    async with producer_api(api) as api_url:
        receiver = make(
            database_url, seen, reconcile_url=api_url, reconcile_key=key, reconcile_wait=30.0
        )
        async with receiver, serve_app(receiver.asgi_app()) as url:
            await deliver(session, url, events[0], 1)
            await eventually(lambda: seen.order.get(conv_id) == [1])
            started = time.monotonic()
            await deliver(session, url, events[3], 4)
            expected = [1, 3, 4] if case == "pruned" else [1, 4]
            await eventually(lambda: seen.order.get(conv_id) == expected)
            assert time.monotonic() - started < 10
            [gap] = await receiver.inbox.gaps()
    assert gap.status is GapStatus.UNFILLED
    reason = {
        "unknown": f"the API does not know conversation {conv_id} (404)",
        "pruned": "sequence 2 pruned by retention",
        "bad-key": "the API answered 401",
    }[case]
    assert gap.reason is not None
    assert gap.reason.startswith(reason)
    assert len(api.requests) == 1


async def test_an_earlier_event_being_retried_holds_the_later_one(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """A later event waits while an earlier one of its conversation is retried, then runs."""
    _, events = conversation(3)
    calls: list[tuple[int | None, bool]] = []
    failed_once: set[int] = set()

    async def flaky(event: Any, delivery: Any) -> None:
        if delivery.sequence == 2 and 2 not in failed_once:
            failed_once.add(2)
            calls.append((2, False))
            await asyncio.sleep(0.2)
            raise RuntimeError("CRM timeout")
        calls.append((delivery.sequence, True))

    receiver = receiver_at(database_url, SECRET)
    receiver.add_handler(flaky, name="flaky")
    async with receiver, serve_app(receiver.asgi_app()) as url:
        for seq, event in enumerate(events, start=1):
            await deliver(session, url, event, seq)
        await eventually(lambda: len(calls) == 4)
        gaps = await receiver.inbox.gaps()
    assert calls == [(1, True), (2, False), (2, True), (3, True)]
    assert gaps == []


async def test_conversations_run_concurrently_each_in_sequence_order(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """Events of many conversations delivered shuffled and at once are handled in sequence
    order per conversation (missing ones filled from the API), each exactly once."""
    conversations = [conversation(4) for _ in range(6)]
    api = ProducerAPI(dict(conversations))
    seen = Seen()
    async with producer_api(api) as api_url:
        receiver = make(database_url, seen, reconcile_url=api_url, reconcile_key=KEY)
        async with receiver, serve_app(receiver.asgi_app()) as url:
            sends = [
                deliver(session, url, event, seq)
                for _, events in conversations
                for seq, event in reversed(list(enumerate(events, start=1)))
            ]
            assert set(await asyncio.gather(*sends)) == {200}
            await eventually(lambda: sum(len(v) for v in seen.order.values()) == 24)
            await asyncio.sleep(0.3)
    assert {conv: seen.order[conv] for conv, _ in conversations} == {
        conv: [1, 2, 3, 4] for conv, _ in conversations
    }


async def test_without_sequences_the_lifecycle_rank_flags_out_of_order_events(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """From a sender without sequence headers, an event ranked below the last one handled is
    recorded out of order (never a gap), and a skipped type is not a gap."""
    conv_id, events = conversation(4)
    seen = Seen()
    receiver = make(database_url, seen)
    async with receiver, serve_app(receiver.asgi_app()) as url:
        await deliver(session, url, events[0], None)
        await eventually(lambda: len(seen.order.get(conv_id, [])) == 1)
        await deliver(session, url, events[2], None)  # userLeft never came: fine
        await eventually(lambda: len(seen.order.get(conv_id, [])) == 2)
        await deliver(session, url, events[1], None)  # userLeft after completed
        await eventually(lambda: len(seen.order.get(conv_id, [])) == 3)
        await eventually(lambda: _has(receiver, GapKind.OUT_OF_ORDER))
        gaps = await receiver.inbox.gaps()
    [late] = gaps
    assert (late.event_id, late.kind, late.status) == (
        events[1].event_id,
        GapKind.OUT_OF_ORDER,
        GapStatus.RECORDED,
    )
    assert late.reason == (
        "conversation.userLeft arrived after a later lifecycle event had been handled"
    )


async def test_operational_events_are_not_ordered(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """An operational event's sequence header (per endpoint) never makes a gap."""
    event = sample_event("endpoint.disabled")
    seen: list[str] = []
    receiver = receiver_at(database_url, SECRET)
    receiver.on_any(lambda e: seen.append(e.event_type))
    async with receiver, serve_app(receiver.asgi_app()) as url:
        assert await deliver(session, url, event, 7) == 200
        await eventually(lambda: seen == ["endpoint.disabled"])
        stored = await receiver.inbox.get(event.event_id)
        gaps = await receiver.inbox.gaps()
    assert stored is not None
    assert (stored.conversation_id, stored.sequence) == (None, None)
    assert gaps == []


async def test_handlers_run_in_the_delivered_trace(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """A valid traceparent is stored and each handler, async or sync, runs in a child of it;
    an invalid one is ignored, not refused."""
    conv_id, events = conversation(2)
    trace = tracing.TraceContext.new()
    sync_seen: list[tracing.TraceContext | None] = []
    seen = Seen()
    receiver = make(database_url, seen)
    receiver.on("conversation.userJoined")(lambda e: sync_seen.append(tracing.current()))
    async with receiver, serve_app(receiver.asgi_app()) as url:
        assert await deliver(session, url, events[0], 1, traceparent=trace.header()) == 200
        assert await deliver(session, url, events[1], 2, traceparent="00-nonsense") == 200
        await eventually(lambda: seen.order.get(conv_id) == [1, 2] and len(sync_seen) == 1)
        first = await receiver.inbox.get(events[0].event_id)
        second = await receiver.inbox.get(events[1].event_id)
    assert first is not None
    assert second is not None
    assert (first.traceparent, second.traceparent) == (trace.header(), None)
    async_ctx, other = seen.traces
    for ctx in (async_ctx, sync_seen[0]):
        assert ctx is not None
        assert ctx.trace_id == trace.trace_id
        assert ctx.span_id != trace.span_id
    assert other is not None
    assert other.trace_id != trace.trace_id


async def test_with_otlp_configured_intake_and_handlers_are_spans_of_the_senders_trace(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With OTLP configured, the intake is a receive span and each handler a handle span,
    both children of the delivered traceparent's span."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    conv_id, events = conversation(1)
    sent = tracing.TraceContext.new()
    seen = Seen()
    assert tracing.configure("reconcile-test-receiver")
    try:
        receiver = make(str(tmp_path / "inbox.db"), seen)
        async with receiver, serve_app(receiver.asgi_app()) as url:
            await deliver(session, url, events[0], 1, traceparent=sent.header())
            await eventually(lambda: seen.order.get(conv_id) == [1])
    finally:
        tracing.shutdown()

    def exported() -> bool:
        names = {s["name"] for s in collector.spans if s["trace_id"] == sent.trace_id}
        return {"receive", "handle conversation.userJoined"} <= names

    await eventually(exported, timeout=10)
    spans = {s["name"]: s for s in collector.spans if s["trace_id"] == sent.trace_id}
    assert spans["receive"]["parent_span_id"] == sent.span_id
    assert spans["handle conversation.userJoined"]["parent_span_id"] == sent.span_id
    [handler_context] = seen.traces
    assert handler_context is not None
    assert handler_context.span_id == spans["handle conversation.userJoined"]["span_id"]


@pytest.fixture(params=["sqlite", "sqlite-writer-process", "postgres"])
def any_inbox(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An inbox on SQLite (written by a thread or by a child process) or PostgreSQL."""
    if request.param == "postgres":
        server: TemporaryPostgres = request.getfixturevalue("pg_server")
        return server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    path = str(tmp_path / "inbox.db")
    return WRITER_PROCESS + path if request.param == "sqlite-writer-process" else path


async def test_the_inbox_keeps_progress_gaps_and_deferrals(any_inbox: str) -> None:
    """A conversation's progress only rises; a gap noted again counts the look and keeps the
    first detection, and is settled once; a deferred event is due later with its attempt
    given back."""
    conv_id, events = conversation(3)
    async with inbox_at(any_inbox) as inbox:
        for seq, event in enumerate(events, start=1):
            await inbox.add(
                Received(
                    event.event_id,
                    None,
                    event.event_type,
                    event.to_json(),
                    {},
                    100.0 + seq,
                    claimed_until=500.0 if seq == 3 else None,
                    conversation_id=conv_id,
                    sequence=seq,
                )
            )
        await inbox.handled(conv_id, 2, 2, events[1].event_id, 110.0)
        await inbox.handled(conv_id, 1, 1, events[0].event_id, 111.0)
        assert await inbox.progress(conv_id) == Progress(2, 2)
        assert await inbox.progress("conv_other") == Progress(0, 0)
        assert [s for s, _, _ in await inbox.between(conv_id, 0, 3)] == [1, 2]

        def gap(status: GapStatus, at: float, reason: str | None) -> Gap:
            return Gap(
                events[2].event_id, conv_id, GapKind.GAP, 0, 3, status, reason, 0, 1, at, None
            )

        first = await inbox.note_gap(gap(GapStatus.OPEN, 120.0, "down"))
        again = await inbox.note_gap(gap(GapStatus.OPEN, 130.0, "still down"))
        assert (first.attempts, again.attempts) == (1, 2)
        assert (again.detected_at, again.reason) == (120.0, "still down")
        await inbox.close_gap(events[2].event_id, GapStatus.FILLED, None, 2, 140.0)
        await inbox.close_gap(events[2].event_id, GapStatus.UNFILLED, "late", 0, 150.0)
        [stored] = await inbox.gaps()
        assert (stored.status, stored.filled, stored.resolved_at) == (GapStatus.FILLED, 2, 140.0)
        assert await inbox.covered(conv_id, 2)
        assert not await inbox.covered(conv_id, 3)
        assert await inbox.gap_counts() == {"filled": 1}
        assert (await inbox.gaps_of([events[2].event_id, "evt_none"])).keys() == {
            events[2].event_id
        }

        await inbox.defer(events[2].event_id, 600.0, 150.0)
        deferred = await inbox.get(events[2].event_id)
    assert deferred is not None
    assert (deferred.status, deferred.attempts, deferred.next_attempt_at) == (
        HandlerStatus.PENDING,
        0,
        600.0,
    )
    assert (deferred.conversation_id, deferred.sequence) == (conv_id, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reconcile_url": "http://127.0.0.1:9"}, "needs both"),
        ({"reconcile_key": KEY}, "needs both"),
        ({"reconcile_url": "ftp://x", "reconcile_key": KEY}, "http:// or https://"),
    ],
)
def test_a_half_or_wrong_reconcile_setting_is_refused(
    tmp_path: Path, kwargs: dict[str, str], message: str
) -> None:
    """A reconcile URL without a key (or the reverse), or a URL that is not HTTP, is a
    ConfigError saying what to pass."""
    with pytest.raises(ConfigError, match=message):
        Receiver([SECRET], str(tmp_path / "inbox.db"), **kwargs)  # type: ignore[arg-type]


def test_the_reconcile_key_never_shows_in_its_repr() -> None:
    """The workspace key stays out of the settings' repr (and so out of logs and tracebacks)."""
    assert KEY not in repr(Reconcile("http://127.0.0.1:9", KEY))


async def test_a_very_wide_gap_the_api_answers_in_part_is_unfilled(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """A gap of more than 10,000 sequences of which the API returns only a few is recorded
    unfilled with the count missing (it was recorded filled), and the later event runs."""
    conv_id, events = conversation(2)
    api = ProducerAPI({conv_id: events})
    seen = Seen()
    async with producer_api(api) as api_url:
        receiver = make(
            str(tmp_path / "i.db"),
            seen,
            reconcile_url=api_url,
            reconcile_key=KEY,
            reconcile_wait=30.0,
        )
        async with receiver, serve_app(receiver.asgi_app()) as url:
            late = sample_event("conversation.completed", overrides={"id": conv_id})
            await deliver(session, url, late, 20_005)
            await eventually(lambda: seen.order.get(conv_id) == [1, 2, 20_005])
            [gap] = await receiver.inbox.gaps()
    assert gap.status is GapStatus.UNFILLED
    assert gap.reason is not None
    assert "20002 of sequences 1-20004 not returned" in gap.reason
