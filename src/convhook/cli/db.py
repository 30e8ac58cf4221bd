"""``convhook db``: apply and inspect schema migrations."""

from __future__ import annotations

import typer

from convhook.cli._common import err, out, print_json, run
from convhook.config import db_option, option

db_app = typer.Typer(help="Database schema: upgrade and status.", no_args_is_help=True)
COMPONENTS = ("producer", "inbox")


@db_app.command()
def upgrade(
    db: str = db_option("convhook.db"),
    component: list[str] | None = option(
        None,
        "--component",
        env="DB_COMPONENT",
        help="Which schema: producer (serve, dispatcher) or inbox (listen). Default: both.",
    ),
) -> None:
    """Bring the database schema up to the version this convhook ships.

    Example: ``convhook db upgrade --db postgresql://convhook@db/convhook --component inbox``
    """
    names = component or list(COMPONENTS)
    for name in names:
        if name not in COMPONENTS:
            raise typer.BadParameter(f"unknown component {name!r}: use producer or inbox")
    applied = run(_upgrade(db, names))
    for line in applied:
        err.print(f"applied {line}")
    err.print(f"[green]schema up to date[/] ({', '.join(names)})")


async def _upgrade(url: str, components: list[str]) -> list[str]:
    from convhook.store import open_database

    applied: list[str] = []
    for component in components:
        db = open_database(url, component, auto_upgrade=True)
        before = await _status_of(url, component)
        async with db:
            pass
        after = await _status_of(url, component)
        if after != before:
            applied.append(f"{component}: {before} -> {after}")
    return applied


@db_app.command()
def status(
    db: str = db_option("convhook.db"),
    as_json: bool = option(False, "--json", env="JSON", help="Print JSON."),
) -> None:
    """Show each schema's version in the database next to the version this code ships.

    Example: ``convhook db status --db convhook.db``
    """
    from convhook.store.engine.migrations import latest, load
    from convhook.store.engine.url import DatabaseURL

    dialect = "postgres" if DatabaseURL.parse(db).engine == "postgres" else "sqlite"
    rows = []
    for component in COMPONENTS:
        found = run(_status_of(db, component))
        known = latest(load(dialect, component)).get(component, 0)
        rows.append({"component": component, "database": found, "code": known})
    if as_json:
        print_json(rows)
        return
    for row in rows:
        state = "ok" if row["database"] == row["code"] else "needs `convhook db upgrade`"
        out.print(f"{row['component']:<9} database {row['database']}  code {row['code']}  {state}")


async def _status_of(url: str, component: str) -> int:
    from convhook.store import open_database

    return await open_database(url, component).installed_version(component)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
