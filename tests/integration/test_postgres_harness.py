"""Integration tests for the throwaway PostgreSQL harness (real server, no mocks)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.postgres import TemporaryPostgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[TemporaryPostgres]:
    """One server for the whole module, since starting one costs about a second."""
    with TemporaryPostgres() as server:
        yield server


def test_select_one(postgres: TemporaryPostgres) -> None:
    """A psycopg connection to the harness DSN can run a query."""
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_defaults_favour_speed_over_durability(postgres: TemporaryPostgres) -> None:
    """The default server runs with fsync and synchronous_commit off."""
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute("show fsync").fetchone() == ("off",)
        assert conn.execute("show synchronous_commit").fetchone() == ("off",)
        assert conn.execute("show max_connections").fetchone() == ("200",)


def test_create_database(postgres: TemporaryPostgres) -> None:
    """create_database returns a DSN that connects to the new database."""
    dsn = postgres.create_database("harness_check")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select current_database()").fetchone() == ("harness_check",)


def test_restart_keeps_port_and_accepts_new_connections(
    postgres: TemporaryPostgres,
) -> None:
    """restart() cuts existing connections, keeps the port, and serves new ones."""
    port_before = postgres.port
    old_conn = psycopg.connect(postgres.dsn, autocommit=True)
    try:
        postgres.restart()
        assert postgres.port == port_before
        with pytest.raises(psycopg.OperationalError):
            old_conn.execute("select 1")
    finally:
        old_conn.close()
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_stop_removes_data_dir() -> None:
    """stop() shuts the server down and deletes its data directory."""
    server = TemporaryPostgres(durable=True)
    server.start()
    data_dir = server.data_dir
    port = server.port
    try:
        assert (data_dir / "PG_VERSION").is_file()
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("show fsync").fetchone() == ("on",)
    finally:
        server.stop()
    assert not data_dir.exists()
    assert not server.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2)


def test_failed_start_reports_server_log_and_cleans_up() -> None:
    """A server that cannot start raises with the log tail and leaves no directory."""
    server = TemporaryPostgres(settings={"shared_buffers": "not-a-size"})
    with pytest.raises(RuntimeError, match="shared_buffers") as excinfo:
        server.start()
    assert "lines of" in str(excinfo.value)
    assert not server.running
