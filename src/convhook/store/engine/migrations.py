"""Schema migrations: numbered SQL files under ``store/sql/<dialect>/<component>/``.

Each component (``inbox`` for the receiver, ``producer`` for the API and dispatcher) has its
own version in the ``convhook_schema`` table, so one database may hold both. A database whose
version is newer than the files this code ships is refused: running old code on a new schema
would corrupt it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from convhook.errors import ConfigError, SchemaVersionError
from convhook.store.engine.connection import Connection, PerDialect

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One schema step: ``component`` goes to ``version`` by running ``sql``."""

    component: str
    version: int
    name: str
    sql: str


def load(dialect: str, component: str) -> list[Migration]:
    """The migrations shipped for ``component`` in ``dialect`` (``sqlite`` or ``postgres``)."""
    folder = resources.files("convhook.store") / "sql" / dialect / component
    if not folder.is_dir():
        raise ConfigError(f"no {dialect} schema ships for the {component} store")
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(component, int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    return found


def latest(migrations: list[Migration]) -> dict[str, int]:
    """The newest version of each component in ``migrations``."""
    versions: dict[str, int] = {}
    for m in migrations:
        versions[m.component] = max(versions.get(m.component, 0), m.version)
    return versions


_INSTALLED = PerDialect(
    sqlite="SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'convhook_schema'",
    postgres="SELECT to_regclass('convhook_schema') IS NOT NULL",
)


def installed(conn: Connection, component: str) -> int:
    """The version of ``component``'s schema in the database (0: none), changing nothing."""
    if not conn.execute(_INSTALLED.of(conn)).fetchone()[0]:
        return 0
    row = conn.execute(
        "SELECT version FROM convhook_schema WHERE component = ?", (component,)
    ).fetchone()
    return int(row[0]) if row else 0


def record_version(conn: Connection, m: Migration) -> None:
    """Note in ``convhook_schema`` that ``m`` was applied (inside its transaction)."""
    conn.execute(
        "INSERT INTO convhook_schema (component, version) VALUES (?, ?) "
        "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
        (m.component, m.version),
    )


def too_new(component: str, found: int, known: int) -> SchemaVersionError:
    return SchemaVersionError(
        f"the database's {component} schema is at version {found}, newer than this convhook "
        f"knows ({known}): upgrade convhook, or point it at another database"
    )


def apply_sqlite(conn: Connection, migrations: list[Migration]) -> None:
    """Bring a SQLite database up to date, one transaction per migration."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS convhook_schema "
        "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    current = {r[0]: r[1] for r in conn.execute("SELECT component, version FROM convhook_schema")}
    for component, known in latest(migrations).items():
        if current.get(component, 0) > known:
            raise too_new(component, current[component], known)
    for m in migrations:
        if m.version <= current.get(m.component, 0):
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the lock: another process may have migrated meanwhile.
            row = conn.execute(
                "SELECT version FROM convhook_schema WHERE component = ?", (m.component,)
            ).fetchone()
            if row is not None and row[0] >= m.version:
                conn.execute("COMMIT")
                continue
            for statement in _statements(m.sql):
                conn.execute(statement)
            record_version(conn, m)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(sql: str) -> list[str]:
    """Split a migration file on ``;`` at line ends (the files keep one statement per block)."""
    return [s.strip() for s in re.split(r";\s*$", sql, flags=re.MULTILINE) if s.strip()]
