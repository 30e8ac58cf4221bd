"""What delivery SQL needs to know about the engine it runs on (from ``conn.dialect``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from convhook.store.engine.connection import Connection

# The channel the PostgreSQL fan-out trigger notifies (see sql/postgres/producer/0002).
CHANNEL = "convhook_deliveries"


def is_sqlite(conn: Connection) -> bool:
    """Whether ``conn`` is SQLite's (the few statements that differ branch on this)."""
    return conn.dialect.name == "sqlite"


def indexed_by(conn: Connection, index: str) -> str:
    """SQLite's ``INDEXED BY`` hint (its planner needs it here); nothing on PostgreSQL."""
    return f"INDEXED BY {index}" if is_sqlite(conn) else ""


def in_list(conn: Connection, column: str) -> str:
    """``column`` is one of a list bound as one parameter (made by :func:`list_param`)."""
    # PostgreSQL types the array from the column; SQLite reads a JSON array.
    if is_sqlite(conn):
        return f"{column} IN (SELECT value FROM json_each(?))"
    return f"{column} = ANY(?)"


def list_param(conn: Connection, values: Sequence[Any]) -> Any:
    """``values`` as the parameter :func:`in_list` reads."""
    return json.dumps(list(values)) if is_sqlite(conn) else list(values)


def notify(conn: Connection) -> None:
    """Wake dispatchers in other processes (PostgreSQL NOTIFY, sent at commit)."""
    if conn.dialect.shared:
        conn.execute(f"SELECT pg_notify('{CHANNEL}', '')")
