"""``convhook workspaces``: create workspaces (and their API keys) and list them."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from convhook.cli._common import err, fail, out, print_json, run
from convhook.config import DatabaseURL, db_option, option
from convhook.errors import ConfigError

workspaces = typer.Typer(help="Create and list workspaces.", no_args_is_help=True)


def _url(db: str) -> DatabaseURL:
    try:
        return DatabaseURL.parse(db)
    except ConfigError as exc:
        fail(str(exc))


@workspaces.command("create")
def create(
    name: str = typer.Argument(..., help="A name for the workspace."),
    db: str = db_option("convhook.db"),
    as_json: bool = option(False, "--json", env="JSON", help='Print {"workspaceId","apiKey"}.'),
) -> None:
    """Create a workspace and print its API key (shown only this once; stored hashed)."""
    from convhook.store.producer import ProducerStore

    async def go() -> tuple[str, str]:
        async with ProducerStore.at(_url(db)) as store:
            workspace, key = await store.create_workspace(name)
            return workspace.id, key

    workspace_id, key = run(go())
    if as_json:
        print_json({"workspaceId": workspace_id, "apiKey": key})
        return
    err.print(f"Created workspace {name!r} ({workspace_id}). Its API key, shown only this once:")
    out.print(key)


@workspaces.command("list")
def list_(
    db: str = db_option("convhook.db"),
    as_json: bool = option(False, "--json", env="JSON", help="Print JSON."),
) -> None:
    """List workspaces, oldest first."""
    from rich.table import Table

    from convhook.store.producer import ProducerStore
    from convhook.timefmt import format_ts

    async def go() -> list[tuple[str, str, int]]:
        async with ProducerStore.at(_url(db)) as store:
            return [(w.id, w.name, w.created_at) for w in await store.list_workspaces()]

    rows = run(go())

    def when(ms: int) -> str:
        return format_ts(datetime.fromtimestamp(ms / 1000, UTC))

    if as_json:
        print_json([{"id": i, "name": n, "createdAt": when(c)} for i, n, c in rows])
        return
    table = Table("id", "name", "created")
    for workspace_id, name, created in rows:
        table.add_row(workspace_id, name, when(created))
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(workspaces, name="workspaces")
