"""``convhook events``: follow events and delivery attempts as they happen, list, show and
resend events, through a server's API; the same from the database file, and pruning it.

``tail`` and ``list`` ask the server when an API URL is configured (``--api-url``,
``CONVHOOK_API_URL`` or a profile) and read the database otherwise (``--db``): on the server's
own host, without a key, the file is the quicker way in, and the existing scripts keep working.
A ``--db`` on the command line wins over a URL from the environment or a profile, and a URL
from the environment over ``CONVHOOK_DATABASE_URL`` (flags > environment > profile).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

import typer

from convhook.cli._common import err, fail, out, print_json, run
from convhook.cli._follow import COLOURS
from convhook.cli._follow import stream as follow
from convhook.cli.remote import (
    Client,
    Connection,
    api_key_option,
    api_url_option,
    connection,
    json_option,
    profile_option,
    read_profiles,
    run_remote,
)
from convhook.config import DATABASE_ENV, DatabaseURL, db_option, option
from convhook.errors import ConfigError, StoreError
from convhook.vocabulary import OperationalEventType

if TYPE_CHECKING:
    from convhook.store.delivery.log import AttemptLine
    from convhook.store.producer import EventRow, ProducerStore

events = typer.Typer(
    help="Follow, list, show or resend events through a server's API (--api-url, "
    "CONVHOOK_API_URL or `convhook login`); follow, list or prune them in a database (--db).",
    no_args_is_help=True,
)

_DB_HELP = (
    "Read this SQLite file or postgresql:// database instead of asking a server "
    "(default: ./convhook.db when no API URL is configured)."
)
_OPERATIONAL = frozenset(t.value for t in OperationalEventType)
# Where a setting came from, strongest first (flags > environment > profile > default).
_RANK = {"COMMANDLINE": 3, "PROMPT": 3, "ENVIRONMENT": 2, "DEFAULT_MAP": 1, "DEFAULT": 0}


def _db_option() -> Any:
    return typer.Option(None, "--db", envvar=DATABASE_ENV, show_envvar=True, help=_DB_HELP)


def _server(
    ctx: typer.Context, api_url: str | None, api_key: str | None, profile: str | None
) -> Connection | None:
    """The server to ask, or None to read the database (see the module docstring)."""
    db_source = ctx.get_parameter_source("db")
    db_rank = _RANK[db_source.name] if db_source is not None else 0
    url_source = ctx.get_parameter_source("api_url")
    if api_url is not None and url_source is not None:
        url_rank = _RANK[url_source.name]
    else:
        # A --profile that does not exist is an error (connection() says so), not the file.
        saved = profile is not None or bool(read_profiles().get("default", {}).get("apiUrl"))
        url_rank = 1 if saved else 0
    if db_rank == 3 and url_rank == 3:
        fail("give --db (read the database) or --api-url (ask a server), not both")
    if url_rank == 0 or db_rank > url_rank:
        return None
    return connection(api_url, api_key, profile)


def _only(ctx: typer.Context, where: str, params: dict[str, str]) -> None:
    """Exit 2 naming the options (``params``: parameter name to flag) given on the command
    line that do not apply to ``where``; set in the environment, they are meant for the
    other form and are left alone."""
    wrong = [
        flag
        for name, flag in params.items()
        if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
    ]
    if wrong:
        fail(f"{', '.join(wrong)} only {'apply' if len(wrong) > 1 else 'applies'} {where}")


def _store(db: str) -> ProducerStore:
    from convhook.store.producer import ProducerStore

    try:
        return ProducerStore.at(DatabaseURL.parse(db))
    except ConfigError as exc:
        fail(str(exc))


def _when(ms: int) -> str:
    from convhook.timefmt import format_ms

    return format_ms(ms)


def _colour(event_type: str) -> str:
    """The colour ``event_type`` is printed in; white for a type this version does not know."""
    return COLOURS.get(event_type, "white")


def _subject(event: dict[str, Any]) -> str:
    """What a listed event is about, as the table shows it: the conversation's id, or for an
    operational event ``endpoint <id>`` (its payload is an endpoint state or a delivery
    failure, filed under the endpoint)."""
    if event.get("pruned"):
        return "(payload pruned)"
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return ""
    if event.get("eventType") in _OPERATIONAL:
        endpoint = payload.get("endpointId")
        return f"endpoint {endpoint}" if isinstance(endpoint, str) else ""
    conversation = payload.get("id")
    return conversation if isinstance(conversation, str) else ""


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
    colour = _colour(row.event_type)
    out.print(
        f"[dim]{_when(row.created_at)}[/]  [{colour}]{row.event_type:<32}[/] "
        f"{row.conversation_id} [dim]#{row.conversation_seq}  {row.id}  {row.workspace_id}[/]",
        markup=True,
    )


@events.command("tail")
def tail(
    ctx: typer.Context,
    event_type: str | None = option(
        None, "--type", env="EVENT_TYPE", help="Server: only this event type."
    ),
    conversation: str | None = option(
        None, "--conversation", env="CONVERSATION", help="Server: only this conversation's."
    ),
    endpoint: str | None = option(
        None,
        "--endpoint",
        env="ENDPOINT",
        help="Server: only the delivery attempts to this endpoint (no events).",
    ),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    db: str | None = _db_option(),
    workspace: str | None = option(
        None, "--workspace", env="WORKSPACE", help="Database: only this workspace."
    ),
    from_start: bool = option(
        False,
        "--from-start",
        env="FROM_START",
        help="Print the events (and attempts) already recorded first.",
    ),
    interval: float = option(
        0.5, "--interval", env="TAIL_INTERVAL", help="Database: seconds between polls."
    ),
    as_json: bool = option(
        False, "--json", env="JSON", help="Print NDJSON, one line an event or attempt (`kind`)."
    ),
) -> None:
    """Print each new event as it is recorded (time, type, conversation) and each delivery
    attempt as it is made (endpoint, status, latency), in time order, until interrupted.

    From a server, over its event stream (reconnecting where it left off when the connection
    drops); without an API URL, by polling the database file.
    Example: ``convhook events tail --type conversation.completed --json``
    Example with the database: ``convhook events tail --db convhook.db --json``
    """
    server = _server(ctx, api_url, api_key, profile)
    if server is not None:
        local = {"workspace": "--workspace", "interval": "--interval"}
        _only(ctx, "to --db (the key already picks the workspace)", local)
        params = {
            "eventType": event_type,
            "conversationId": conversation,
            "endpointId": endpoint,
            "since": "start" if from_start else None,
        }
        follow(server, params, as_json)
        return
    remote = {"event_type": "--type", "conversation": "--conversation", "endpoint": "--endpoint"}
    _only(ctx, "to a server (--api-url)", remote)
    _tail_db(db or "convhook.db", workspace, from_start, interval, as_json)


def _tail_db(
    db: str, workspace: str | None, from_start: bool, interval: float, as_json: bool
) -> None:
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
    ctx: typer.Context,
    event_type: str | None = option(
        None, "--type", env="EVENT_TYPE", help="Server: only this event type."
    ),
    conversation: str | None = option(
        None, "--conversation", env="CONVERSATION", help="Server: only this conversation's."
    ),
    created_after: str | None = option(
        None, "--created-after", env="CREATED_AFTER", help="Server: at or after this ISO time."
    ),
    created_before: str | None = option(
        None, "--created-before", env="CREATED_BEFORE", help="Server: before this ISO time."
    ),
    cursor: str | None = option(
        None, "--cursor", env="CURSOR", help="Server: start at this nextCursor of a page."
    ),
    every: bool = option(
        False, "--all", env="ALL", help="Server: follow nextCursor to the last page."
    ),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    db: str | None = _db_option(),
    workspace: str | None = option(
        None, "--workspace", env="WORKSPACE", help="Database: only this workspace."
    ),
    after: int = option(
        0, "--after", env="AFTER", min=0, help="Database: start after this sequence number."
    ),
    limit: int = option(50, "--limit", env="LIMIT", min=1, max=500, help="Events a page."),
    as_json: bool = option(
        False,
        "--json",
        env="JSON",
        help="Print JSON: the API's page {data, nextCursor} from a server, NDJSON (one event "
        "a line) from a database.",
    ),
) -> None:
    """Print recorded events, oldest first: from a server, as endpoints receive them (a table,
    or the API's JSON); from a database, one line each.

    Example: ``convhook events list --type conversation.completed --all --json``
    Example with the database: ``convhook events list --db convhook.db --limit 20 --json``
    """
    server = _server(ctx, api_url, api_key, profile)
    if server is not None:
        _only(ctx, "to --db", {"workspace": "--workspace", "after": "--after"})
        params = {
            "eventType": event_type,
            "conversationId": conversation,
            "createdAfter": created_after,
            "createdBefore": created_before,
            "cursor": cursor,
            "limit": limit,
        }
        _list_remote(server, params, every, as_json)
        return
    remote = {
        "event_type": "--type",
        "conversation": "--conversation",
        "created_after": "--created-after",
        "created_before": "--created-before",
        "cursor": "--cursor",
        "every": "--all",
    }
    _only(ctx, "to a server (--api-url)", remote)
    db = db or "convhook.db"

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


def _path(event_id: str, action: str = "") -> str:
    from urllib.parse import quote

    return f"/api/v2/events/{quote(event_id, safe='')}" + (f"/{action}" if action else "")


def _list_remote(conn: Connection, params: dict[str, Any], every: bool, as_json: bool) -> None:
    from convhook.cli.remote import table

    async def go(api: Client) -> dict[str, Any]:
        return await api.pages("/api/v2/events", params, every)

    page = run_remote(conn, go)
    if as_json:
        print_json(page)
        return
    rows = [
        {
            "event id": event["eventId"],
            "type": event["eventType"].removeprefix("conversation."),
            "subject": _subject(event),
        }
        for event in page["data"]
    ]

    def style(column: str, value: str) -> str:
        if column != "type":
            return ""
        # The conversation types are shown without their prefix; the others whole.
        colour = _colour(value if "." in value else "conversation." + value)
        return "" if colour == "white" else colour

    table(
        f"{len(rows)} event(s), oldest first",
        rows,
        ["event id", "type", "subject"],
        drop=("subject",),
        ids=("event id", "subject"),
        style=style,
    )
    if page["nextCursor"]:
        err.print(f"more: --cursor {page['nextCursor']} (or --all)", markup=False)


@events.command("show")
def show(
    event_id: str = typer.Argument(..., help="The event's id (evt_...)."),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option("Print the event alone, exactly as endpoints receive it."),
) -> None:
    """Show one event as endpoints receive it, then its deliveries (one per endpoint).

    Example: ``convhook events show evt_0192... --json``
    """
    conn = connection(api_url, api_key, profile)

    async def go(api: Client) -> tuple[Any, Any]:
        event = await api.get(_path(event_id))
        if as_json:
            return event, None
        return event, await api.get(_path(event_id, "deliveries"))

    event, deliveries = run_remote(conn, go)
    if as_json:
        print_json(event)
        return
    from rich.syntax import Syntax

    from convhook.cli.deliveries import delivery_table

    out.print(Syntax(json.dumps(event, indent=2), "json", word_wrap=True))
    delivery_table(f"{len(deliveries['data'])} deliveries", deliveries["data"])


@events.command("resend")
def resend(
    event_id: str = typer.Argument(..., help="The event's id (evt_...)."),
    endpoint: str | None = option(
        None, "--endpoint", env="ENDPOINT", help="Only to this endpoint (default: every one)."
    ),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option(),
) -> None:
    """Send an event again to every endpoint it went to, or to one of them.

    Its earlier delivery there must be finished (delivered or failed).

    Example: ``convhook events resend evt_0192... --endpoint ep_0192...``
    """
    from convhook.cli.remote import call

    conn = connection(api_url, api_key, profile)
    body = {"endpointId": endpoint} if endpoint else None
    doc = call(conn, "POST", _path(event_id, "redeliver"), body=body)
    if as_json:
        print_json(doc)
        return
    out.print(f"queued {doc['queued']} deliveries of {event_id}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(events, name="events")
