"""The committed schema.sql of each engine and component is what its migrations produce."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from convhook.store.engine.migrations import load
from tests.support.schema_dump import (
    COMPONENTS,
    DIALECTS,
    difference,
    generate,
    schema_path,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("component", COMPONENTS)
def test_sqlite_schema_file_matches_migrations(component: str, db_path: Path) -> None:
    """Migrating a fresh SQLite file yields exactly the committed sqlite/<component>/schema.sql."""
    problem = difference("sqlite", component, generate("sqlite", component, db_path))
    assert problem is None, problem


@pytest.mark.parametrize("component", COMPONENTS)
def test_postgres_schema_file_matches_migrations(component: str, pg_url: str) -> None:
    """Migrating a fresh PostgreSQL database yields exactly the committed
    postgres/<component>/schema.sql."""
    problem = difference("postgres", component, generate("postgres", component, pg_url))
    assert problem is None, problem


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_schema_file_is_not_a_migration(dialect: str, component: str) -> None:
    """load() returns the numbered migration files only, never schema.sql next to them."""
    folder = schema_path(dialect, component).parent
    numbered = sorted(p.stem.split("_", 1)[1] for p in folder.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    assert schema_path(dialect, component).exists()
    assert sorted(m.name for m in load(dialect, component)) == numbered


def test_dump_schema_check_passes_on_committed_files() -> None:
    """scripts/dump-schema --check runs end to end and finds every committed file up to date."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dump-schema"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
