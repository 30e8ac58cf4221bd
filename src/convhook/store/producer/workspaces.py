"""Workspaces (tenants) and their API keys, stored as sha256 digests."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from convhook.ids import new_id
from convhook.store.engine.connection import Connection
from convhook.store.producer.paging import now_ms


@dataclass(frozen=True)
class Workspace:
    """A tenant: every customer, conversation and event belongs to exactly one."""

    id: str
    name: str
    created_at: int
    """Epoch milliseconds."""


def hash_key(key: str) -> str:
    """The sha256 hex digest an API key is stored as."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_workspace(name: str) -> tuple[Workspace, str]:
    """A workspace to create and its first API key (``chk_...``)."""
    return Workspace(new_id("ws"), name, now_ms()), "chk_" + secrets.token_urlsafe(32)


def insert(conn: Connection, workspace: Workspace, key: str) -> None:
    """Store the workspace and its key's digest."""
    conn.execute(
        "INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)",
        (workspace.id, workspace.name, workspace.created_at),
    )
    conn.execute(
        "INSERT INTO api_keys (key_hash, workspace_id, prefix, created_at) VALUES (?, ?, ?, ?)",
        (hash_key(key), workspace.id, key[:8], workspace.created_at),
    )


def all_(conn: Connection) -> list[Workspace]:
    """Every workspace, oldest first."""
    rows = conn.execute("SELECT id, name, created_at FROM workspaces ORDER BY created_at, id")
    return [Workspace(r["id"], r["name"], r["created_at"]) for r in rows]


def for_key(conn: Connection, key_hash: str) -> tuple[Workspace, str] | None:
    """The workspace a key digest belongs to, with the stored digest, or None."""
    row = conn.execute(
        "SELECT w.id, w.name, w.created_at, k.key_hash FROM api_keys k "
        "JOIN workspaces w ON w.id = k.workspace_id WHERE k.key_hash = ?",
        (key_hash,),
    ).fetchone()
    if row is None:
        return None
    return Workspace(row["id"], row["name"], row["created_at"]), row["key_hash"]
