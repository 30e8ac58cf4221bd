"""The developer commands as real subprocesses: schema, secret, db upgrade/status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from openapi_spec_validator import validate

from convhook.events import EventType, OperationalEventType
from convhook.signing import Secret


def convhook(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `convhook ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "convhook", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_schema_prints_one_json_schema_per_event() -> None:
    """`convhook schema` prints a JSON Schema for every catalogue event."""
    done = convhook("schema", "--format", "jsonschema")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert list(doc) == [e.value for e in [*EventType, *OperationalEventType]]
    assert all(s["$schema"].endswith("2020-12/schema") for s in doc.values())


def test_schema_prints_a_valid_openapi_document() -> None:
    """`convhook schema --format openapi` prints a valid OpenAPI 3.1 document."""
    done = convhook("schema", "--format", "openapi")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    validate(doc)
    assert set(doc["webhooks"]) == {e.value for e in [*EventType, *OperationalEventType]}


def test_schema_refuses_an_unknown_format() -> None:
    """An unknown format is a usage error naming the choices."""
    done = convhook("schema", "--format", "yaml")
    assert done.returncode == 2
    assert "jsonschema" in done.stderr


def test_secret_prints_a_usable_secret() -> None:
    """`convhook secret` prints a fresh whsec_ secret that parses."""
    first, second = convhook("secret").stdout.strip(), convhook("secret").stdout.strip()
    assert first != second
    assert len(Secret.parse(first).key) == 24


def test_db_upgrade_and_status_on_sqlite(tmp_path: Path) -> None:
    """`db status` shows an empty file needs upgrading; `db upgrade` brings it up to date."""
    db = str(tmp_path / "x.db")
    before = json.loads(convhook("db", "status", "--db", db, "--json").stdout)
    assert all(row["database"] == 0 < row["code"] for row in before)
    done = convhook("db", "upgrade", "--db", db)
    assert done.returncode == 0, done.stderr
    assert "schema up to date" in done.stderr
    after = json.loads(convhook("db", "status", "--db", db, "--json").stdout)
    assert all(row["database"] == row["code"] for row in after)
    text = convhook("db", "status", "--db", db).stdout
    assert "needs" not in text


def test_db_upgrade_on_postgres(pg_url: str) -> None:
    """`db upgrade` applies the shipped PostgreSQL schema and is idempotent."""
    done = convhook("db", "upgrade", "--db", pg_url, "--component", "producer")
    assert done.returncode == 0, done.stderr
    assert "applied producer: 0 ->" in done.stderr
    again = convhook("db", "upgrade", "--db", pg_url, "--component", "producer")
    assert again.returncode == 0
    assert "applied" not in again.stderr.replace("schema up to date", "")


def test_db_upgrade_refuses_an_unknown_component(tmp_path: Path) -> None:
    """An unknown component name is refused with the valid names."""
    done = convhook("db", "upgrade", "--db", str(tmp_path / "x.db"), "--component", "nope")
    assert done.returncode == 2
    assert "producer or inbox" in done.stderr


def test_bad_database_url_is_a_one_line_error(tmp_path: Path) -> None:
    """An unsupported database scheme is reported without a traceback."""
    done = convhook("db", "upgrade", "--db", "mysql://localhost/x")
    assert done.returncode == 2
    assert "unsupported database scheme" in done.stderr
    assert "Traceback" not in done.stderr


def test_version_prints_the_package_version() -> None:
    """`convhook --version` prints the installed version and exits 0."""
    from convhook import __version__

    done = convhook("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"convhook {__version__}"
