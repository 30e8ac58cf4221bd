"""The current schema of each engine and component, as its migrations leave a fresh database.

``scripts/dump-schema`` writes it to ``src/convhook/store/sql/<dialect>/<component>/schema.sql``
and ``tests/integration/test_schema_files.py`` checks those files against fresh databases; both
go through :func:`generate`, so the file and the check cannot normalise differently.

SQLite: the ``sql`` column of ``sqlite_master`` (tables, then indexes, triggers and views, each
by name). PostgreSQL: ``pg_dump --schema-only`` by the server's own ``pg_dump``, without the
lines that change from run to run or machine to machine (versions, session settings, the
``\\restrict`` key).
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from pathlib import Path

import psycopg

from convhook.store.engine.migrations import apply_sqlite, load
from convhook.store.engine.postgres import PgConnection, apply_postgres
from convhook.store.engine.sqlite import connect
from tests.support.postgres import _find_bin_dir

__all__ = [
    "COMPONENTS",
    "DIALECTS",
    "REGENERATE",
    "difference",
    "dump_postgres",
    "dump_sqlite",
    "generate",
    "migrate_postgres",
    "migrate_sqlite",
    "render",
    "schema_path",
]

DIALECTS = ("sqlite", "postgres")
COMPONENTS = ("producer", "inbox")
REGENERATE = ".venv/bin/python scripts/dump-schema"

# The checkout's own files, not an installed copy: the script writes here and the test reads here.
_ROOT = Path(__file__).resolve().parents[2]
_SQL_ROOT = _ROOT / "src" / "convhook" / "store" / "sql"
_PG_DUMP_TIMEOUT_S = 60

# Tables before the indexes and triggers that name them, so the file reads top down.
_SQLITE_SCHEMA = """
SELECT sql FROM sqlite_master
WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'trigger' THEN 2 ELSE 3 END,
         name
"""

# pg_dump lines that say where and when the dump was taken rather than what the schema is.
_PG_VOLATILE = (
    re.compile(r"^\\(un)?restrict \S+$"),  # a random key per run (pg_dump 15.14, 16.10, 17.6 on)
    re.compile(r"^-- Dumped (from database|by pg_dump) version .*$"),
    re.compile(r"^-- PostgreSQL database dump( complete)?$"),
    re.compile(r"^SET \w+ = .*;$"),
    re.compile(r"^SELECT pg_catalog\.set_config\('search_path', '', false\);$"),
)
_PG_OBJECT_COMMENT = re.compile(r"^(-- Name: .*); Schema: public; Owner: -$")


def schema_path(dialect: str, component: str) -> Path:
    """The committed schema file of ``component`` on ``dialect``."""
    return _SQL_ROOT / dialect / component / "schema.sql"


def migrate_sqlite(path: str | Path, component: str) -> None:
    """Apply every shipped SQLite migration of ``component`` to the file at ``path``."""
    conn = connect(path)
    try:
        apply_sqlite(conn, load("sqlite", component))
    finally:
        conn.close()


def dump_sqlite(path: str | Path) -> str:
    """The schema of the SQLite file at ``path``, one statement per paragraph."""
    conn = connect(path)
    try:
        statements = [row[0] for row in conn.execute(_SQLITE_SCHEMA)]
    finally:
        conn.close()
    return "\n\n".join(f"{s.strip()};" for s in statements) + "\n"


def migrate_postgres(dsn: str, component: str) -> None:
    """Apply every shipped PostgreSQL migration of ``component`` to the database at ``dsn``."""
    with psycopg.connect(dsn, autocommit=True) as raw:
        apply_postgres(PgConnection(raw), load("postgres", component))


def dump_postgres(dsn: str) -> str:
    """The schema of the PostgreSQL database at ``dsn``, by ``pg_dump --schema-only``."""
    # The pg_dump next to the server the harness starts: never older than that server.
    pg_dump = _find_bin_dir() / "pg_dump"
    argv = [
        str(pg_dump),
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--no-tablespaces",
        "--dbname",
        dsn,
    ]
    # PG* variables from the caller (PGOPTIONS, PGSERVICE...) could change what is dumped.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_PG_DUMP_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pg_dump failed (exit {result.returncode}): {result.stderr.strip()}")
    return _normalise_pg_dump(result.stdout)


def _normalise_pg_dump(text: str) -> str:
    kept: list[str] = []
    for line in text.splitlines():
        if any(p.match(line) for p in _PG_VOLATILE):
            continue
        kept.append(_PG_OBJECT_COMMENT.sub(r"\1", line).rstrip())
    # Dropped lines leave empty "--" frames and runs of blank lines behind; one blank line
    # between paragraphs is enough.
    body = re.sub(r"(?m)^--\n--$", "", "\n".join(kept))
    return re.sub(r"\n{3,}", "\n\n", body).strip("\n") + "\n"


def render(dialect: str, component: str, body: str) -> str:
    """The schema file's text: a header saying where it comes from, then ``body``."""
    engine = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[dialect]
    header = (
        f"-- The {component} schema on {engine} as the migrations in this folder leave a fresh\n"
        f"-- database (NNNN_name.sql files only: this file is never run).\n"
        f"-- Generated: do not edit. After changing a migration, regenerate with\n"
        f"--     {REGENERATE}\n"
        f"-- tests/integration/test_schema_files.py fails while this file is out of date.\n"
    )
    return f"{header}\n{body}"


def generate(dialect: str, component: str, target: str | Path) -> str:
    """Migrate the fresh database ``target`` (SQLite path or PostgreSQL URL) and return the
    schema file it yields."""
    if dialect == "sqlite":
        migrate_sqlite(target, component)
        body = dump_sqlite(target)
    else:
        migrate_postgres(str(target), component)
        body = dump_postgres(str(target))
    return render(dialect, component, body)


def difference(dialect: str, component: str, generated: str) -> str | None:
    """``None`` when the committed file equals ``generated``; otherwise what to run and a diff."""
    path = schema_path(dialect, component)
    committed = path.read_text(encoding="utf-8") if path.exists() else ""
    if committed == generated:
        return None
    relative = path.relative_to(_ROOT)
    diff = difflib.unified_diff(
        committed.splitlines(keepends=True),
        generated.splitlines(keepends=True),
        fromfile=f"{relative} (committed)",
        tofile=f"{relative} (from the migrations)",
    )
    return (
        f"{relative} does not match what the {dialect} {component} migrations produce: "
        f"run {REGENERATE} and commit the result\n" + "".join(diff)
    )
