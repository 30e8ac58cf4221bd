"""``convhook events``: follow the outbox as events are recorded, list them, prune old ones."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from convhook.cli._common import err, fail, out, run
from convhook.config import DatabaseURL, db_option, option
from convhook.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from convhook.store.delivery.log import AttemptLine
    from convhook.store.producer import EventRow, ProducerStore

events = typer.Typer(help="Follow, list or prune recorded events.", no_args_is_help=True)

_COLOURS = {
    "conversation.userJoined": "green",
    "conversation.userLeft": "yellow",
    "conversation.completed": "cyan",
    "conversation.analysisCompleted": "magenta",
}


def _store(db: str) -> ProducerStore:
    from convhook.store.producer import ProducerStore

    try:
        return ProducerStore.at(DatabaseURL.parse(db))
    except ConfigError as exc:
        fail(str(exc))


def _when(ms: int) -> str:
    from convhook.timefmt import format_ts

    return format_ts(datetime.fromtimestamp(ms / 1000, UTC))


def _show(row: EventRow, as_json: bool) -> None:
    if as_json:
        doc = {
            "kind": "event",
            "seq": row.seq,
            "eventId": row.id,
            "eventType": row.event_type,
            "conversationId": row.conversation_id,
            "conversationSeq": row.conversation_seq,
            "workspaceId": row.workspace_id,
            "createdAt": _when(row.created_at),
        }
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()
        return
    colour = _COLOURS.get(row.event_type, "white")
    out.print(
        f"[dim]{_when(row.created_at)}[/]  [{colour}]{row.event_type:<32}[/] "
        f"{row.conversation_id} [dim]#{row.conversation_seq}  {row.id}  {row.workspace_id}[/]",
        markup=True,
    )


@events.command("tail")
def tail(
    db: str = db_option("convhook.db"),
    workspace: str | None = option(None, "--workspace", env="WORKSPACE", help="Only this one."),
    from_start: bool = option(
        False, "--from-start", env="FROM_START", help="Print the events already recorded first."
    ),
    interval: float = option(0.5, "--interval", env="TAIL_INTERVAL", help="Seconds between polls."),
    as_json: bool = option(False, "--json", env="JSON", help="Print NDJSON, one event a line."),
) -> None:
    """Print each new event as it is recorded (time, type, conversation) and each delivery
    attempt as it is made (endpoint, status, latency), until interrupted.

    Example: ``convhook events tail --db convhook.db --json``
    """

    from convhook.store.delivery import DeliveryStore

    async def go() -> None:
        async with _store(db) as store:
            deliveries = DeliveryStore(store.db)
            seq = 0 if from_start else await store.last_event_seq()
            with_attempts = True
            try:
                attempt = 0 if from_start else await deliveries.last_attempt_id()
            except StoreError:
                attempt = 0
            while True:
                rows = await store.events_after(seq, workspace_id=workspace)
                for row in rows:
                    _show(row, as_json)
                    seq = row.seq
                attempts: list[AttemptLine] = []
                if with_attempts:
                    try:
                        attempts = await deliveries.attempts_after(attempt, workspace_id=workspace)
                    except StoreError as exc:
                        # A database without the delivery schema still has events to show.
                        err.print(f"[yellow]not showing delivery attempts:[/] {exc}")
                        with_attempts = False
                for line in attempts:
                    _show_attempt(line, as_json)
                    attempt = line.id
                if len(rows) < 500 and len(attempts) < 500:
                    await asyncio.sleep(interval)

    run(go())


def _show_attempt(line: AttemptLine, as_json: bool) -> None:
    ok = line.status_code is not None and 200 <= line.status_code < 300
    if as_json:
        doc = {
            "kind": "attempt",
            "attemptId": line.id,
            "eventId": line.event_id,
            "eventType": line.event_type,
            "endpointId": line.endpoint_id,
            "workspaceId": line.workspace_id,
            "statusCode": line.status_code,
            "latencyMs": round(line.latency_ms, 2),
            "error": line.error,
            "deliveryStatus": line.delivery_status,
            "attemptedAt": _when(line.attempted_at),
        }
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()
        return
    colour = "green" if ok else "red"
    outcome = str(line.status_code) if line.status_code is not None else (line.error or "error")
    out.print(
        f"[dim]{_when(line.attempted_at)}[/]    [{colour}]-> {outcome:<28}[/] "
        f"{line.endpoint_id} [dim]{line.latency_ms:.0f} ms  {line.event_id}  "
        f"{line.delivery_status}[/]",
        markup=True,
    )


@events.command("list")
def list_(
    db: str = db_option("convhook.db"),
    workspace: str | None = option(None, "--workspace", env="WORKSPACE", help="Only this one."),
    after: int = option(0, "--after", env="AFTER", min=0, help="Start after this sequence number."),
    limit: int = option(50, "--limit", env="LIMIT", min=1, max=500, help="How many events."),
    as_json: bool = option(False, "--json", env="JSON", help="Print NDJSON, one event a line."),
) -> None:
    """Print recorded events, oldest first.

    Example: ``convhook events list --db convhook.db --limit 20 --json``
    """

    async def go() -> list[EventRow]:
        async with _store(db) as store:
            return await store.events_after(after, workspace_id=workspace, limit=limit)

    for row in run(go()):
        _show(row, as_json)


@events.command("prune")
def prune(
    db: str = db_option("convhook.db"),
    older_than: str = option(
        "30d",
        "--older-than",
        env="RETENTION",
        help="Remove payloads of events older than this (s, m, h or d, e.g. 30d).",
    ),
    batch: int = option(1000, "--batch", env="PRUNE_BATCH", min=1, help="Events per transaction."),
    as_json: bool = option(False, "--json", env="JSON", help="Print the outcome as JSON."),
) -> None:
    """Remove the payload of old events whose deliveries are all finished (delivered or
    failed), in small transactions; the event rows, their order and history stay.

    Example: ``convhook events prune --db convhook.db --older-than 30d``
    """
    from convhook.store.producer.retention import parse_period

    try:
        period = parse_period(older_than)
    except ConfigError as exc:
        fail(str(exc))

    async def go() -> tuple[int, int, int]:
        async with _store(db) as store:
            done = await store.prune_events(older_than_ms=period, batch=batch)
            return done.events, done.batches, done.cutoff

    pruned, batches, cutoff = run(go())
    if as_json:
        sys.stdout.write(
            json.dumps({"pruned": pruned, "batches": batches, "before": _when(cutoff)}) + "\n"
        )
        return
    err.print(f"pruned {pruned} events created before {_when(cutoff)} in {batches} batches")


def register(app: typer.Typer) -> None:
    app.add_typer(events, name="events")
