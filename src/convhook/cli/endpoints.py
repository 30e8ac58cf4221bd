"""``convhook endpoints``: a running server's webhook endpoints, through its API."""

from __future__ import annotations

from typing import Any

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

endpoints = typer.Typer(
    help="Create, list and change a server's webhook endpoints (through its API: --api-url, "
    "CONVHOOK_API_URL or `convhook login`).",
    no_args_is_help=True,
)

_ID = typer.Argument(..., help="The endpoint's id (ep_...).", show_default=False)
_EVENT_TYPES_HELP = "Only this event type (repeat for several), e.g. conversation.completed."


def _path(endpoint_id: str, action: str = "") -> str:
    from urllib.parse import quote

    return f"/api/v2/endpoints/{quote(endpoint_id, safe='')}" + (f"/{action}" if action else "")


def _show(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(doc)
        return
    print_fields(doc)
    if "secret" in doc:
        err.print(
            "the secret is shown this once: give it to the receiver (convhook listen --secret, "
            "or its CONVHOOK_SECRET)",
            markup=False,
        )


@endpoints.command("list")
def list_(
    limit: int = option(100, "--limit", env="LIMIT", min=1, max=500, help="Endpoints a page."),
    cursor: str | None = option(
        None, "--cursor", env="CURSOR", help="Start at this nextCursor of an earlier page."
    ),
    every: bool = option(False, "--all", env="ALL", help="Follow nextCursor to the last page."),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option("Print the API's page: {data, nextCursor}."),
) -> None:
    """List the workspace's endpoints, oldest first (never their secrets).

    Example: ``convhook endpoints list --all --json``
    """
    conn = connection(api_url, api_key, profile)

    async def go(api: Client) -> dict[str, Any]:
        return await api.pages("/api/v2/endpoints", {"limit": limit, "cursor": cursor}, every)

    page = run_remote(conn, go)
    if as_json:
        print_json(page)
        return
    rows = [
        {
            "id": e["id"],
            "state": "enabled" if e["enabled"] else f"disabled {e.get('disabledReason') or ''}",
            "types": ",".join(t.removeprefix("conversation.") for t in e["eventTypes"] or ["all"]),
            "failing since": short_time(e.get("failingSince")),
            "url": e["url"],
        }
        for e in page["data"]
    ]
    table(
        f"{len(rows)} endpoint(s)",
        rows,
        ["id", "state", "types", "failing since", "url"],
        drop=("failing since", "types"),
        ids=("id",),
        cut="url",
        style=lambda c, v: ("green" if v == "enabled" else "red") if c == "state" else "",
    )
    if page["nextCursor"]:
        err.print(f"more: --cursor {page['nextCursor']} (or --all)", markup=False)


@endpoints.command("create")
def create(
    url: str = typer.Argument(..., help="The http(s) URL that receives the events."),
    event_type: list[str] | None = option(
        None, "--event-type", env="EVENT_TYPES", help=_EVENT_TYPES_HELP
    ),
    description: str = option("", "--description", env="DESCRIPTION", help="A note for people."),
    enabled: bool = option(True, "--enabled/--disabled", env="ENABLED", help="Deliver at once."),
    rate_limit: float | None = option(
        None, "--rate-limit", env="RATE_LIMIT", help="Deliveries per second at most."
    ),
    max_in_flight: int = option(
        10, "--max-in-flight", env="MAX_IN_FLIGHT", help="Concurrent deliveries at most."
    ),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option(),
) -> None:
    """Create an endpoint; prints it with its signing secret, which is shown this once.

    Example: ``convhook endpoints create https://example.com/hooks --event-type conversation.completed``
    """
    conn = connection(api_url, api_key, profile)
    body: dict[str, Any] = {
        "url": url,
        "description": description,
        "enabled": enabled,
        "maxInFlight": max_in_flight,
    }
    if event_type:
        body["eventTypes"] = event_type
    if rate_limit is not None:
        body["rateLimit"] = rate_limit
    _show(call(conn, "POST", "/api/v2/endpoints", body=body), as_json)


@endpoints.command("show")
def show(
    endpoint_id: str = _ID,
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option(),
) -> None:
    """Show one endpoint (without its secret).

    Example: ``convhook endpoints show ep_0192... --json``
    """
    conn = connection(api_url, api_key, profile)
    _show(call(conn, "GET", _path(endpoint_id)), as_json)


@endpoints.command("update")
def update(
    endpoint_id: str = _ID,
    url: str | None = option(None, "--url", env="ENDPOINT_URL", help="A new URL."),
    event_type: list[str] | None = option(
        None, "--event-type", env="EVENT_TYPES", help=_EVENT_TYPES_HELP
    ),
    all_types: bool = option(
        False, "--all-event-types", env="ALL_EVENT_TYPES", help="Send every event type again."
    ),
    description: str | None = option(None, "--description", env="DESCRIPTION", help="A note."),
    rate_limit: float | None = option(
        None, "--rate-limit", env="RATE_LIMIT", help="Deliveries per second at most."
    ),
    no_rate_limit: bool = option(
        False, "--no-rate-limit", env="NO_RATE_LIMIT", help="Remove the rate limit."
    ),
    max_in_flight: int | None = option(
        None, "--max-in-flight", env="MAX_IN_FLIGHT", help="Concurrent deliveries at most."
    ),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option(),
) -> None:
    """Change an endpoint: only the options given change.

    Example: ``convhook endpoints update ep_0192... --url https://example.com/v2/hooks``
    """
    if event_type and all_types:
        fail("give --event-type or --all-event-types, not both")
    if rate_limit is not None and no_rate_limit:
        fail("give --rate-limit or --no-rate-limit, not both")
    conn = connection(api_url, api_key, profile)
    body: dict[str, Any] = {}
    if url is not None:
        body["url"] = url
    if event_type or all_types:
        body["eventTypes"] = event_type or None
    if description is not None:
        body["description"] = description
    if rate_limit is not None or no_rate_limit:
        body["rateLimit"] = rate_limit
    if max_in_flight is not None:
        body["maxInFlight"] = max_in_flight
    if not body:
        fail("nothing to change: give at least one option (see --help)")
    _show(call(conn, "PATCH", _path(endpoint_id), body=body), as_json)


def _switch(action: str, doc: str) -> Any:
    def command(
        endpoint_id: str = _ID,
        api_url: str | None = api_url_option(),
        api_key: str | None = api_key_option(),
        profile: str | None = profile_option(),
        as_json: bool = json_option(),
    ) -> None:
        conn = connection(api_url, api_key, profile)
        _show(call(conn, "POST", _path(endpoint_id, action)), as_json)

    command.__doc__ = doc
    return command


endpoints.command("enable")(
    _switch(
        "enable",
        """Deliver to the endpoint again, from the events recorded from now on.

        `convhook endpoints recover` re-sends the deliveries that failed meanwhile.

        Example: ``convhook endpoints enable ep_0192...``
        """,
    )
)
endpoints.command("disable")(
    _switch(
        "disable",
        """Stop delivering to the endpoint; its waiting deliveries become failed.

        Example: ``convhook endpoints disable ep_0192...``
        """,
    )
)


@endpoints.command("rotate-secret")
def rotate_secret(
    endpoint_id: str = _ID,
    grace_hours: float = option(
        24.0, "--grace-hours", env="GRACE_HOURS", help="Hours the old secret also signs."
    ),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option(),
) -> None:
    """Issue a new signing secret, shown this once.

    The old secret also signs for the grace period, so receivers switch without losing events.

    Example: ``convhook endpoints rotate-secret ep_0192... --grace-hours 2``
    """
    conn = connection(api_url, api_key, profile)
    body = {"graceHours": grace_hours}
    _show(call(conn, "POST", _path(endpoint_id, "rotate-secret"), body=body), as_json)


@endpoints.command("test")
def send_test(
    endpoint_id: str = _ID,
    event_type: str = option(
        "conversation.userJoined", "--event-type", env="EVENT_TYPE", help="Which sample event."
    ),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option(),
) -> None:
    """Queue a sample event for this endpoint only; prints its delivery id to follow.

    Example: ``convhook endpoints test ep_0192... --event-type conversation.completed``
    """
    conn = connection(api_url, api_key, profile)
    doc = call(conn, "POST", _path(endpoint_id, "test"), body={"eventType": event_type})
    if as_json:
        print_json(doc)
        return
    out.print(f"{doc['deliveryId']} {doc['eventId']}", markup=False)
    err.print(f"follow it: convhook deliveries show {doc['deliveryId']}", markup=False)


@endpoints.command("recover")
def recover(
    endpoint_id: str = _ID,
    since: str = option(
        ...,
        "--since",
        env="SINCE",
        help="Re-send the failed deliveries created at or after this ISO 8601 time, "
        "e.g. 2026-01-31T12:00:00Z.",
    ),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
    as_json: bool = json_option(),
) -> None:
    """Queue again every failed delivery of the endpoint since a time (enable it first).

    Example: ``convhook endpoints recover ep_0192... --since 2026-01-31T12:00:00Z``
    """
    conn = connection(api_url, api_key, profile)
    doc = call(conn, "POST", _path(endpoint_id, "recover"), body={"since": since})
    if as_json:
        print_json(doc)
        return
    out.print(f"queued {doc['queued']} deliveries", markup=False)


@endpoints.command("delete")
def delete(
    endpoint_id: str = _ID,
    yes: bool = option(False, "--yes", env="YES", help="Do not ask for confirmation."),
    api_url: str | None = api_url_option(),
    api_key: str | None = api_key_option(),
    profile: str | None = profile_option(),
) -> None:
    """Delete the endpoint with its delivery log (asks first unless --yes).

    Example: ``convhook endpoints delete ep_0192... --yes``
    """
    import sys

    conn = connection(api_url, api_key, profile)
    if not yes:
        if not sys.stdin.isatty():
            fail("pass --yes to delete without a terminal to confirm on")
        if not typer.confirm(f"delete {endpoint_id} and its delivery log?"):
            raise typer.Exit(1)
    call(conn, "DELETE", _path(endpoint_id))
    err.print(f"deleted {endpoint_id}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(endpoints, name="endpoints")
