"""``convhook inbox``: read the receiver's stored inbox, re-run handlers or re-forward events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from convhook.cli._common import err, fail, out, print_json, run
from convhook.config import db_option, option

if TYPE_CHECKING:
    from convhook.store.inbox import InboxEntry
    from convhook.store.inbox.store import DatabaseInbox

DEFAULT_DB = "convhook-inbox.db"
_DB_HELP = "Inbox database: a SQLite file path or a postgresql:// URL."

inbox_app = typer.Typer(
    help="Read the stored inbox of `convhook listen`; re-run handlers or re-forward events.",
    no_args_is_help=True,
)


def _open(db: str) -> DatabaseInbox:
    from convhook.config import DatabaseURL
    from convhook.errors import ConvhookError
    from convhook.store.inbox.store import open_inbox

    try:
        url = DatabaseURL.parse(db)
    except ConvhookError as exc:
        fail(str(exc))
    if url.engine == "sqlite" and not Path(url.target).exists():
        fail(f"no inbox at {url.target}: pass --db with the file `convhook listen` writes")
    return open_inbox(db)


@inbox_app.command("list")
def list_events(
    status: str | None = option(
        None, "--status", env="INBOX_STATUS", help="Only pending, running, done or failed."
    ),
    limit: int = option(50, "--limit", env="INBOX_LIMIT", min=1, help="How many, newest first."),
    db: str = db_option(DEFAULT_DB, help=_DB_HELP),
    as_json: bool = option(False, "--json", env="JSON", help="Print JSON."),
) -> None:
    """List stored events, newest first, with their handler outcome."""
    from convhook.store.inbox import HandlerStatus

    wanted = None
    if status is not None:
        try:
            wanted = HandlerStatus(status)
        except ValueError:
            fail(f"--status must be one of {', '.join(s.value for s in HandlerStatus)}")
    inbox = _open(db)

    async def select() -> list[InboxEntry]:
        async with inbox:
            return await inbox.recent(wanted, limit)

    entries = run(select())
    if as_json:
        print_json([{**e.as_dict(), "conversationId": _conversation_id(e)} for e in entries])
        return
    _table(entries)


@inbox_app.command("show")
def show(
    event_id: str = typer.Argument(..., help="The eventId to show."),
    db: str = db_option(DEFAULT_DB, help=_DB_HELP),
    as_json: bool = option(False, "--json", env="JSON", help="Print JSON."),
) -> None:
    """Show one stored event: its outcome, the webhook headers and the full body."""
    inbox = _open(db)

    async def get() -> InboxEntry | None:
        async with inbox:
            return await inbox.get(event_id)

    entry = run(get())
    if entry is None:
        fail(f"no event {event_id} in {db}", code=1)
    data = entry.as_dict(with_body=True)
    if as_json:
        print_json(data)
        return
    from rich.syntax import Syntax

    body = data.pop("body")
    headers = data.pop("headers")
    for key, value in data.items():
        out.print(f"[bold]{key}[/]: {_shown(key, value)}")
    out.print("[bold]headers[/]:")
    for key, value in headers.items():
        out.print(f"  {key}: {value}", markup=False)
    out.print(Syntax(json.dumps(body, indent=2), "json", word_wrap=True))


@inbox_app.command("replay")
def replay(
    event_id: str | None = typer.Argument(None, help="The eventId to replay."),
    failed: bool = option(False, "--failed", env="INBOX_REPLAY_FAILED", help="Every failed one."),
    forward_to: str | None = option(
        None,
        "--forward-to",
        env="FORWARD_TO",
        help="Re-send the stored raw request to this URL now instead of re-running handlers.",
    ),
    db: str = db_option(DEFAULT_DB, help=_DB_HELP),
    as_json: bool = option(False, "--json", env="JSON", help="Print JSON."),
) -> None:
    """Re-run an event's handlers (a running `convhook listen` picks it up), or re-forward it.

    A failed event re-runs only the handlers that failed; a done event runs them all again.
    """
    if (event_id is None) == (not failed):
        fail("give either an EVENT_ID or --failed")
    inbox = _open(db)
    if forward_to:
        results = run(_forward(inbox, event_id, forward_to))
        if as_json:
            print_json(results)
        else:
            for r in results:
                colour = "green" if r["ok"] else "red"
                out.print(f"[{colour}]{r['status'] or 'error'}[/] {r['eventId']} {r['detail']}")
        if not results or not all(r["ok"] for r in results):
            raise typer.Exit(1)
        return
    requeued, asked = run(_requeue(inbox, event_id))
    if as_json:
        print_json({"requeued": requeued})
    else:
        for eid in requeued:
            out.print(f"[green]pending[/] {eid}")
        if requeued:
            err.print(
                f"{len(requeued)} event(s) marked pending: a `convhook listen` on {db} runs "
                "them within a second (or when it next starts)"
            )
    if len(requeued) < asked or not requeued:
        if event_id is not None:
            fail(f"no event {event_id} in {db}", code=1)
        err.print("no failed events")


async def _requeue(inbox: DatabaseInbox, event_id: str | None) -> tuple[list[str], int]:
    import time

    async with inbox:
        ids = [event_id] if event_id is not None else await inbox.failed_ids()
        return await inbox.requeue(ids, time.time()), len(ids)


async def _forward(inbox: DatabaseInbox, event_id: str | None, url: str) -> list[dict[str, Any]]:
    from convhook.errors import ConvhookError
    from convhook.receiver.forwarder import Forwarder

    try:
        forwarder = Forwarder(url)
    except ConvhookError as exc:
        fail(str(exc))
    results: list[dict[str, Any]] = []
    async with inbox:
        ids = [event_id] if event_id is not None else await inbox.failed_ids()
        try:
            for eid in ids:
                entry = await inbox.get(eid)
                if entry is None:
                    results.append(
                        {"eventId": eid, "ok": False, "status": None, "detail": "not found"}
                    )
                    continue
                try:
                    status = await forwarder.send(entry.body, entry.headers)
                    results.append({"eventId": eid, "ok": True, "status": status, "detail": ""})
                except ConvhookError as exc:
                    results.append(
                        {"eventId": eid, "ok": False, "status": None, "detail": str(exc)}
                    )
        finally:
            await forwarder.close()
    return results


def _conversation_id(entry: InboxEntry) -> str | None:
    try:
        payload = json.loads(entry.body).get("payload")
    except (ValueError, AttributeError):
        return None
    value = payload.get("id") if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None


def _when(ts: float | None) -> str:
    from datetime import UTC, datetime

    from convhook.timefmt import format_ts

    return "" if ts is None else format_ts(datetime.fromtimestamp(ts, UTC))


def _shown(key: str, value: Any) -> str:
    if key in ("receivedAt", "updatedAt", "nextAttemptAt"):
        return _when(value)
    return str(value)


_STATUS_STYLE = {"done": "green", "failed": "bold red", "pending": "yellow", "running": "cyan"}


def _table(entries: list[InboxEntry]) -> None:
    from rich.table import Table

    table = Table(title=f"inbox: {len(entries)} event(s), newest first")
    # Ids and status never shrink to an ellipsis: on a narrow terminal they fold instead.
    table.add_column("received", overflow="fold", min_width=10)
    table.add_column("event id", overflow="fold", min_width=12)
    table.add_column("type", overflow="fold", min_width=10)
    table.add_column("conversation", overflow="fold", min_width=12)
    table.add_column("status", no_wrap=True, min_width=7)
    table.add_column("attempts", no_wrap=True, justify="right")
    table.add_column("last error", overflow="fold", min_width=10)
    for e in entries:
        style = _STATUS_STYLE.get(e.status.value, "")
        table.add_row(
            _when(e.received_at),
            e.event_id,
            e.event_type,
            _conversation_id(e) or "",
            f"[{style}]{e.status.value}[/]",
            str(e.attempts),
            e.last_error or "",
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(inbox_app, name="inbox")
