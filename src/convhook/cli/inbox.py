"""``convhook inbox``: read the receiver's stored inbox, re-run handlers or re-forward events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from convhook.cli._common import err, fail, out, print_json, run
from convhook.config import INBOX_ENV, db_option, option

if TYPE_CHECKING:
    from convhook.store.inbox import Gap, InboxEntry
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
    db: str = db_option(DEFAULT_DB, help=_DB_HELP, env=INBOX_ENV),
    as_json: bool = option(False, "--json", env="JSON", help="Print JSON."),
) -> None:
    """List stored events, newest first, with their handler outcome.

    Example: ``convhook inbox list --status failed --limit 20``
    """
    from convhook.store.inbox import HandlerStatus

    wanted = None
    if status is not None:
        try:
            wanted = HandlerStatus(status)
        except ValueError:
            fail(f"--status must be one of {', '.join(s.value for s in HandlerStatus)}")
    inbox = _open(db)

    async def select() -> tuple[list[InboxEntry], dict[str, Gap]]:
        async with inbox:
            entries = await inbox.recent(wanted, limit)
            return entries, await inbox.gaps_of([e.event_id for e in entries])

    entries, gaps = run(select())
    if as_json:
        print_json([_entry_json(e, gaps.get(e.event_id)) for e in entries])
        return
    _table(entries, gaps)


@inbox_app.command("show")
def show(
    event_id: str = typer.Argument(..., help="The eventId to show."),
    db: str = db_option(DEFAULT_DB, help=_DB_HELP, env=INBOX_ENV),
    as_json: bool = option(False, "--json", env="JSON", help="Print JSON."),
) -> None:
    """Show one stored event: its outcome, the webhook headers and the full body.

    Example: ``convhook inbox show evt_01a2... --json``
    """
    inbox = _open(db)

    async def get() -> tuple[InboxEntry | None, Gap | None]:
        async with inbox:
            found = await inbox.get(event_id)
            gap = (await inbox.gaps_of([event_id])).get(event_id)
            return found, gap

    entry, gap = run(get())
    if entry is None:
        fail(f"no event {event_id} in {db}", code=1)
    data = entry.as_dict(with_body=True)
    data["conversationId"] = data["conversationId"] or _conversation_id(entry)
    data["gap"] = None if gap is None else gap.as_dict()
    if as_json:
        print_json(data)
        return
    from rich.syntax import Syntax

    body = data.pop("body")
    headers = data.pop("headers")
    for key, value in data.items():
        out.print(f"[bold]{key}[/]: ", end="")
        out.print(_shown(key, value), markup=False, highlight=False)
    out.print("[bold]headers[/]:")
    for key, value in headers.items():
        out.print(f"  {key}: {value}", markup=False)
    out.print(Syntax(json.dumps(body, indent=2), "json", word_wrap=True))


@inbox_app.command("gaps")
def gaps(
    status: str | None = option(
        None,
        "--status",
        env="INBOX_GAP_STATUS",
        help="Only open, filled, unfilled, or recorded (events handled out of order).",
    ),
    conversation: str | None = option(
        None, "--conversation", env="INBOX_CONVERSATION", help="Only this conversation's."
    ),
    limit: int = option(50, "--limit", env="INBOX_LIMIT", min=1, help="How many, newest first."),
    db: str = db_option(DEFAULT_DB, help=_DB_HELP, env=INBOX_ENV),
    as_json: bool = option(False, "--json", env="JSON", help="Print JSON."),
) -> None:
    """List the gaps found in conversations' sequences, and events handled out of order.

    A gap is named by the event that revealed it; it is filled when the missing events were
    fetched from the producer's API and handled first, unfilled (with the reason) when that
    event ran without them. Counts of every status come first.

    Example: ``convhook inbox gaps --status unfilled --json``
    """
    from convhook.store.inbox import GapStatus

    wanted = None
    if status is not None:
        try:
            wanted = GapStatus(status)
        except ValueError:
            fail(f"--status must be one of {', '.join(s.value for s in GapStatus)}")
    inbox = _open(db)

    async def select() -> tuple[dict[str, int], list[Gap]]:
        async with inbox:
            counts = await inbox.gap_counts()
            return counts, await inbox.gaps(wanted, limit, conversation)

    counts, found = run(select())
    if as_json:
        print_json({"counts": counts, "gaps": [g.as_dict() for g in found]})
        return
    _gap_table(counts, found)


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
    db: str = db_option(DEFAULT_DB, help=_DB_HELP, env=INBOX_ENV),
    as_json: bool = option(False, "--json", env="JSON", help="Print JSON."),
) -> None:
    """Re-run an event's handlers (a running `convhook listen` picks it up), or re-forward it.

    A failed event re-runs only the handlers that failed; a done event runs them all again.
    A failed event forwarded with success becomes done.

    Example: ``convhook inbox replay --failed --forward-to http://127.0.0.1:3000/hooks``
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
                state = f" inbox: {r['inboxStatus']}" if "inboxStatus" in r else ""
                out.print(
                    f"[{colour}]{r['status'] or 'error'}[/] {r['eventId']}{state} {r['detail']}"
                )
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
    """Send each stored request to ``url``; a failed event that is forwarded becomes done."""
    import time

    from convhook.errors import ConvhookError
    from convhook.receiver.forwarder import Forwarder
    from convhook.store.inbox import HandlerStatus

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
                except ConvhookError as exc:
                    results.append(
                        {
                            "eventId": eid,
                            "ok": False,
                            "status": None,
                            "detail": str(exc),
                            "inboxStatus": entry.status.value,
                        }
                    )
                    continue
                now = entry.status
                if now is HandlerStatus.FAILED:
                    # The operator resolved the event by forwarding it: the inbox says so,
                    # and `inbox list --status failed` stops showing it.
                    done = (*entry.handlers_done, "forward")
                    await inbox.complete(eid, time.time(), tuple(dict.fromkeys(done)))
                    now = HandlerStatus.DONE
                results.append(
                    {
                        "eventId": eid,
                        "ok": True,
                        "status": status,
                        "detail": "",
                        "inboxStatus": now.value,
                    }
                )
        finally:
            await forwarder.close()
    return results


def _entry_json(entry: InboxEntry, gap: Gap | None) -> dict[str, Any]:
    data = entry.as_dict()
    data["conversationId"] = data["conversationId"] or _conversation_id(entry)
    data["gap"] = None if gap is None else gap.as_dict()
    return data


def _order_mark(entry: InboxEntry, gap: Gap | None) -> str:
    """What the ordering says of an event, in a few words (empty when nothing)."""
    from convhook.store.inbox import GapKind

    marks = []
    if entry.origin == "reconciled":
        marks.append("reconciled")
    if gap is not None:
        if gap.kind is GapKind.OUT_OF_ORDER:
            marks.append("out of order")
        else:
            marks.append(f"after gap {gap.missing} {gap.status.value}")
    return ", ".join(marks)


def _conversation_id(entry: InboxEntry) -> str | None:
    if entry.conversation_id is not None:
        return entry.conversation_id
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
    """A field as JSON shows it (``null``, ``["print"]``), times in ISO 8601."""
    if key in ("receivedAt", "updatedAt", "nextAttemptAt") and value is not None:
        return _when(value)
    if isinstance(value, str):
        return value
    return json.dumps(value)


_STATUS_STYLE = {"done": "green", "failed": "bold red", "pending": "yellow", "running": "cyan"}


def _table(entries: list[InboxEntry], gaps: dict[str, Gap] | None = None) -> None:
    """The entries as a table that fits the terminal: ids are never broken (they are copied
    into `inbox show`), so on a narrow terminal the less useful columns go first."""
    from rich.table import Table
    from rich.text import Text

    gaps = gaps or {}
    rows = [
        {
            "received": _short_when(e.received_at),
            "event id": e.event_id,
            "type": e.event_type.removeprefix("conversation."),
            "conversation": _conversation_id(e) or "",
            "seq": "" if e.sequence is None else str(e.sequence),
            "status": e.status.value,
            "attempts": str(e.attempts),
            "order": _order_mark(e, gaps.get(e.event_id)),
            "last error": (e.last_error or "").replace("\n", " "),
        }
        for e in entries
    ]
    # Dropped in this order while the rest (with 12 columns for the error) would not fit.
    columns = [
        "received",
        "event id",
        "type",
        "conversation",
        "seq",
        "status",
        "attempts",
        "order",
        "last error",
    ]
    if not any(row["seq"] for row in rows):
        columns.remove("seq")
    if not any(row["order"] for row in rows):
        columns.remove("order")
    for optional in ("conversation", "received", "attempts", "seq"):
        if optional not in columns:
            continue
        if _width(rows, columns) <= out.width:
            break
        columns.remove(optional)
    table = Table(title=f"inbox: {len(entries)} event(s), newest first", title_justify="left")
    # Even the fewest columns are too wide (a sender's very long ids): fold the ids rather
    # than cut them, the last resort.
    fold = _width(rows, columns) > out.width
    for name in columns:
        if name == "event id" and fold:
            table.add_column(name, overflow="fold")
        elif name == "last error":
            table.add_column(name, no_wrap=True)
        else:
            right = name in ("attempts", "seq")
            table.add_column(name, no_wrap=True, justify="right" if right else "left")
    # The error gets what the other columns leave (cut here: rich measures a no_wrap cell's
    # minimum as its whole text, and would squeeze the ids instead).
    room = max(12, out.width - _width(rows, columns) + 12)
    for row in rows:
        error = row["last error"]
        row["last error"] = error if len(error) <= room else error[: room - 1] + "…"
    for row in rows:
        # Text, not markup: ids and errors come from the sender and may hold brackets.
        style = _STATUS_STYLE.get(row["status"], "")
        table.add_row(*(Text(row[c], style=style if c == "status" else "") for c in columns))
    out.print(table)


_GAP_STYLE = {"filled": "green", "unfilled": "bold red", "open": "yellow", "recorded": "magenta"}


def _gap_table(counts: dict[str, int], found: list[Gap]) -> None:
    """The counts, then the gaps newest first (text, never markup: ids come from senders)."""
    from rich.table import Table
    from rich.text import Text

    from convhook.store.inbox import GapKind

    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("open", "filled", "unfilled"))
    out.print(
        f"gaps: {summary}; handled out of order: {counts.get('out_of_order', 0)}",
        markup=False,
        highlight=False,
    )
    if not found:
        return
    table = Table(title=f"{len(found)} shown, newest first", title_justify="left")
    for name in ("detected", "conversation", "missing", "status", "filled", "event id", "reason"):
        table.add_column(name, overflow="fold" if name in ("event id", "reason") else "ellipsis")
    for gap in found:
        missing = gap.missing if gap.kind is GapKind.GAP else "(out of order)"
        table.add_row(
            Text(_short_when(gap.detected_at)),
            Text(gap.conversation_id),
            Text(missing),
            Text(gap.status.value, style=_GAP_STYLE.get(gap.status.value, "")),
            Text(str(gap.filled)),
            Text(gap.event_id),
            Text((gap.reason or "").replace("\n", " ")),
        )
    out.print(table)


def _width(rows: list[dict[str, str]], columns: list[str]) -> int:
    """The table's width with ``columns`` at their widest cell (the error at 12)."""
    widths = [
        12 if c == "last error" else max([len(c), *(len(r[c]) for r in rows)]) for c in columns
    ]
    return sum(widths) + 3 * len(columns) + 1


def _short_when(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%m-%d %H:%M:%S")


def register(app: typer.Typer) -> None:
    app.add_typer(inbox_app, name="inbox")
