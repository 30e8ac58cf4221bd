"""``convhook workspaces``: create workspaces and list them; ``workspaces keys``: create,
list and revoke a workspace's named API keys (to rotate a key without downtime)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from convhook.cli._common import err, fail, out, print_json, run
from convhook.config import DatabaseURL, db_option, option
from convhook.errors import ConfigError

if TYPE_CHECKING:
    from convhook.store.producer import ApiKey, ProducerStore

workspaces = typer.Typer(help="Create and list workspaces, and their keys.", no_args_is_help=True)
keys = typer.Typer(
    help="Create, list and revoke a workspace's API keys. Several keys work at once: create "
    "the new one, move clients to it, then revoke the old one.",
    no_args_is_help=True,
)
workspaces.add_typer(keys, name="keys")


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
    """Create a workspace and print its API key (shown only this once; stored hashed).

    Example: ``convhook workspaces create acme --db convhook.db``
    """
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
    """List workspaces, oldest first.

    Example: ``convhook workspaces list --db convhook.db --json``
    """
    from rich.table import Table

    from convhook.store.producer import ProducerStore

    async def go() -> list[tuple[str, str, int]]:
        async with ProducerStore.at(_url(db)) as store:
            return [(w.id, w.name, w.created_at) for w in await store.list_workspaces()]

    rows = run(go())
    if as_json:
        print_json([{"id": i, "name": n, "createdAt": when(c)} for i, n, c in rows])
        return
    table = Table("id", "name", "created")
    for workspace_id, name, created in rows:
        table.add_row(workspace_id, name, when(created))
    out.print(table)


def when(ms: int | None) -> str | None:
    """An epoch-ms time as the API writes it; None stays None."""
    from convhook.timefmt import format_ms

    return None if ms is None else format_ms(ms)


_WORKSPACE = typer.Argument(..., help="The workspace's id (ws_...) or its name.")


async def _workspace_id(store: ProducerStore, given: str) -> str:
    """The id of the workspace ``given`` names, by id or else by a name only one has."""
    from convhook.errors import NotFoundError

    found = await store.list_workspaces()
    if any(w.id == given for w in found):
        return given
    named = [w.id for w in found if w.name == given]
    if len(named) == 1:
        return named[0]
    if named:
        raise ConfigError(f"{len(named)} workspaces are named {given!r}: give the id instead")
    raise NotFoundError(f"no workspace with id or name {given!r} (see `convhook workspaces list`)")


def _key_doc(k: ApiKey) -> dict[str, str | None]:
    return {
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "createdAt": when(k.created_at),
        "lastUsedAt": when(k.last_used_at),
        "revokedAt": when(k.revoked_at),
    }


@keys.command("create")
def create_key(
    workspace: str = _WORKSPACE,
    name: str = typer.Option(..., "--name", help="What the key is for (e.g. billing-2026)."),
    db: str = db_option("convhook.db"),
    as_json: bool = option(
        False, "--json", env="JSON", help='Print the key\'s record with its "key".'
    ),
) -> None:
    """Add a key to a workspace and print it (shown only this once; stored hashed).

    The workspace's other keys keep working.

    Example: ``convhook workspaces keys create default --name billing-2026``
    """
    from convhook.store.producer import ProducerStore

    async def go() -> tuple[ApiKey, str]:
        async with ProducerStore.at(_url(db)) as store:
            return await store.create_key(await _workspace_id(store, workspace), name)

    record, key = run(go())
    if as_json:
        print_json({**_key_doc(record), "key": key})
        return
    err.print(f"Created key {name!r} ({record.id}). The key, shown only this once:")
    out.print(key)


@keys.command("list")
def list_keys(
    workspace: str = _WORKSPACE,
    db: str = db_option("convhook.db"),
    as_json: bool = option(False, "--json", env="JSON", help="Print JSON."),
) -> None:
    """List a workspace's keys, revoked ones too, oldest first (never the keys themselves).

    The last use is recorded to within a minute.

    Example: ``convhook workspaces keys list default --json``
    """
    from rich.table import Column, Table

    from convhook.store.producer import ProducerStore

    async def go() -> list[ApiKey]:
        async with ProducerStore.at(_url(db)) as store:
            return await store.list_keys(await _workspace_id(store, workspace))

    found = run(go())
    if as_json:
        print_json([_key_doc(k) for k in found])
        return
    # Ids are copied from here into `keys revoke`: never shortened to fit the terminal, and
    # the other columns wrap rather than lose characters.
    table = Table(
        Column("id", no_wrap=True, min_width=32),
        *(Column(h, overflow="fold") for h in ("name", "prefix", "created", "last used")),
        Column("revoked", overflow="fold"),
    )
    for k in found:
        table.add_row(
            k.id,
            k.name,
            k.prefix,
            when(k.created_at),
            when(k.last_used_at) or "never",
            when(k.revoked_at) or "",
        )
    out.print(table)


@keys.command("revoke")
def revoke_key(
    workspace: str = _WORKSPACE,
    key_id: str = typer.Argument(..., help="The key's id (key_...), from `keys list`."),
    db: str = db_option("convhook.db"),
    as_json: bool = option(False, "--json", env="JSON", help="Print the revoked key's record."),
) -> None:
    """Revoke a key: every API process refuses it within 5 seconds.

    API processes trust a key they checked for 5 seconds. Revoking the workspace's last
    active key locks its clients out until a new key is created.

    Example: ``convhook workspaces keys revoke default key_01a2...``
    """
    from convhook.store.producer import ProducerStore

    async def go() -> ApiKey:
        async with ProducerStore.at(_url(db)) as store:
            return await store.revoke_key(await _workspace_id(store, workspace), key_id)

    revoked = run(go())
    if as_json:
        print_json(_key_doc(revoked))
        return
    err.print(f"Revoked key {revoked.name!r} ({revoked.id}) at {when(revoked.revoked_at)}.")


def register(app: typer.Typer) -> None:
    app.add_typer(workspaces, name="workspaces")
