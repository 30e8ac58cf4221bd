"""``convhook events``: follow the outbox as events are recorded, or list them."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from convhook.cli._common import fail, out, run
from convhook.config import DatabaseURL, db_option, option
from convhook.errors import ConfigError

if TYPE_CHECKING:
    from convhook.store.producer import EventRow, SQLiteProducerStore

events = typer.Typer(help="Follow or list recorded events.", no_args_is_help=True)

_COLOURS = {
    "conversation.userJoined": "green",
    "conversation.userLeft": "yellow",
    "conversation.completed": "cyan",
    "conversation.analysisCompleted": "magenta",
}


def _store(db: str) -> SQLiteProducerStore:
    from convhook.store.producer import SQLiteProducerStore

    try:
        url = DatabaseURL.parse(db)
    except ConfigError as exc:
        fail(str(exc))
    if url.engine != "sqlite":
        fail("only SQLite databases are supported in this version: pass a file path")
    return SQLiteProducerStore(url.target)


def _when(ms: int) -> str:
    from convhook.timefmt import format_ts

    return format_ts(datetime.fromtimestamp(ms / 1000, UTC))


def _show(row: EventRow, as_json: bool) -> None:
    if as_json:
        doc = {
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
    """Print each new event as it is recorded (time, type, conversation) until interrupted."""

    async def go() -> None:
        async with _store(db) as store:
            seq = 0 if from_start else await store.last_event_seq()
            while True:
                rows = await store.events_after(seq, workspace_id=workspace)
                for row in rows:
                    _show(row, as_json)
                    seq = row.seq
                if len(rows) < 500:
                    await asyncio.sleep(interval)

    run(go())


@events.command("list")
def list_(
    db: str = db_option("convhook.db"),
    workspace: str | None = option(None, "--workspace", env="WORKSPACE", help="Only this one."),
    after: int = option(0, "--after", env="AFTER", min=0, help="Start after this sequence number."),
    limit: int = option(50, "--limit", env="LIMIT", min=1, max=500, help="How many events."),
    as_json: bool = option(False, "--json", env="JSON", help="Print NDJSON, one event a line."),
) -> None:
    """Print recorded events, oldest first."""

    async def go() -> list[EventRow]:
        async with _store(db) as store:
            return await store.events_after(after, workspace_id=workspace, limit=limit)

    for row in run(go()):
        _show(row, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(events, name="events")
