"""``convhook deliveries``: a running server's deliveries and their attempts, through its API."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from convhook.cli._common import err, fail, out, print_json
from convhook.cli.remote import (
    Client,
    api_key_option,
    api_url_option,
    call,
    connection,
    json_option,
    print_fields,
    profile_option,
    run_remote,
    short_time,
    table,
)
from convhook.config import option

deliveries = typer.Typer(
    help="Look into deliveries and their attempts, retry one (through a server's API: "
    "--api-url, CONVHOOK_API_URL or `convhook login`).",
    no_args_is_help=True,
)

_STATUS_STYLE = {"delivered": "green", "failed": "bold red", "pending": "yellow"}


def delivery_rows(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Deliveries as table rows (see :func:`delivery_table`)."""
    return [
        {
            "id": d["id"],
            "created": short_time(d.get("createdAt")),
            "event id": d["eventId"],
            "endpoint": d["endpointId"],
            "type": d["eventType"].removeprefix("conversation."),
            "status": d["status"],
            "tries": str(d["attempts"]),
            "code": "" if d.get("lastStatusCode") is None else str(d["lastStatusCode"]),
            "last error": d.get("lastError") or "",
        }
        for d in docs
    ]


def delivery_table(title: str, docs: list[dict[str, Any]]) -> None:
    """Deliveries as a table that fits the terminal with whole ids."""
    table(
        title,
        delivery_rows(docs),
        ["id", "created", "event id", "endpoint", "type", "status", "tries", "code", "last error"],
        drop=("created", "type", "endpoint", "tries", "code", "last error"),
        ids=("id", "event id", "endpoint"),
        cut="last error",
        style=lambda c, v: _STATUS_STYLE.get(v, "") if c == "status" else "",
    )


@deliveries.command("list")
def list_(
    endpoint: str | None = option(
        None, "--endpoint", env="ENDPOINT", help="The deliveries of this endpoint, newest first."
    ),
    event: str | None = option(
        None, "--event", env="EVENT", help="The deliveries of this event (one per endpoint)."
    ),
    status: str | None = option(
        None,
        "--status",
        env="DELIVERY_STATUS",
        help="With --endpoint: only pending, delivering, delivered or failed.",
    ),
    limit: int = option(50, "--limit", env="LIMIT", min=1, max=500, help="Deliveries a page."),
    cursor: str | None = option(
        None, "--cursor", env="CURSOR", help="Start at this nextCursor of an earlier page."
    ),
    every: bool = option(False, "--all", env="ALL", help="Follow nextCursor to the last page."),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option("Print the API's answer: {data, nextCursor} or {eventId, data}."),
) -> None:
    """List an endpoint's deliveries (newest first) or an event's, with their outcome.

    Example: ``convhook deliveries list --endpoint ep_0192... --status failed``
    """
    if (endpoint is None) == (event is None):
        fail("give --endpoint or --event")
    if event is not None and (status or cursor or every):
        fail("--status, --cursor and --all go with --endpoint")
    conn = connection(api_url, api_key, profile)

    async def go(api: Client) -> dict[str, Any]:
        if event is not None:
            found: dict[str, Any] = await api.get(
                f"/api/v2/events/{quote(event, safe='')}/deliveries"
            )
            return found
        params = {"limit": limit, "cursor": cursor, "status": status}
        path = f"/api/v2/endpoints/{quote(str(endpoint), safe='')}/deliveries"
        return await api.pages(path, params, every)

    doc = run_remote(conn, go)
    if as_json:
        print_json(doc)
        return
    order = "newest first" if endpoint else "one per endpoint"
    delivery_table(f"{len(doc['data'])} deliveries, {order}", doc["data"])
    if doc.get("nextCursor"):
        err.print(f"more: --cursor {doc['nextCursor']} (or --all)", markup=False)


@deliveries.command("show")
def show(
    delivery_id: str = typer.Argument(..., help="The delivery's id (dlv_...)."),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option(),
) -> None:
    """Show one delivery and each of its attempts (status, latency, error, the answer's start).

    Example: ``convhook deliveries show dlv_42 --json``
    """
    conn = connection(api_url, api_key, profile)
    doc = call(conn, "GET", f"/api/v2/deliveries/{quote(delivery_id, safe='')}")
    if as_json:
        print_json(doc)
        return
    print_fields(doc, skip=("attemptLog",))
    for n, attempt in enumerate(doc.get("attemptLog") or [], 1):
        outcome = attempt["statusCode"] if attempt["statusCode"] is not None else "no answer"
        out.print(
            f"[bold]attempt {n}[/]: {attempt['attemptedAt']}  {outcome}  "
            f"{attempt['latencyMs']:.0f} ms",
        )
        if attempt.get("error"):
            out.print(f"  error: {attempt['error']}", markup=False)
        if attempt.get("responseBody"):
            out.print(f"  answer: {' '.join(attempt['responseBody'].split())[:300]}", markup=False)


@deliveries.command("retry")
def retry(
    delivery_id: str = typer.Argument(..., help="The delivery's id (dlv_...)."),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option(),
) -> None:
    """Send a finished (delivered or failed) delivery's event again to its endpoint.

    Example: ``convhook deliveries retry dlv_42``
    """
    conn = connection(api_url, api_key, profile)

    async def go(api: Client) -> dict[str, Any]:
        found = await api.get(f"/api/v2/deliveries/{quote(delivery_id, safe='')}")
        if found["status"] not in ("delivered", "failed"):
            # The API would say "nothing to redeliver": say why instead.
            fail(f"{delivery_id} is {found['status']}: it is retried on its own", code=1)
        path = f"/api/v2/events/{quote(found['eventId'], safe='')}/redeliver"
        doc: dict[str, Any] = await api.call("POST", path, body={"endpointId": found["endpointId"]})
        return {**doc, "eventId": found["eventId"], "endpointId": found["endpointId"]}

    doc = run_remote(conn, go)
    if as_json:
        print_json(doc)
        return
    out.print(f"queued {doc['eventId']} for {doc['endpointId']} again", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(deliveries, name="deliveries")
