"""Fixtures every test shares: a clean environment, free ports, temporary databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.postgres import TemporaryPostgres
from tests.support.servers import free_port


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's CONVHOOK_* settings, nor an OTLP endpoint that would
    make in-process servers export spans and take OpenTelemetry's global provider."""
    for name in list(os.environ):
        if name.startswith(("CONVHOOK_", "OTEL_")):
            monkeypatch.delenv(name)
    return


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session, closed after the test."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a fresh SQLite database file."""
    return tmp_path / "convhook.db"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TemporaryPostgres]:
    """One throwaway PostgreSQL server for the whole run (started on first use).

    It must start: a machine without PostgreSQL fails here (run scripts/ensure-postgres),
    it is never silently skipped.
    """
    with TemporaryPostgres() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: TemporaryPostgres) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a fresh SQLite file and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "convhook.db")
    server: TemporaryPostgres = request.getfixturevalue("pg_server")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")
