"""Workspaces (tenants) and their named API keys, stored as sha256 digests."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from convhook.errors import ConflictError
from convhook.ids import new_id
from convhook.store.engine.connection import Connection
from convhook.store.producer.paging import now_ms

DEFAULT_KEY_NAME = "default"
"""The name of the key a workspace is created with."""


@dataclass(frozen=True)
class Workspace:
    """A tenant: every customer, conversation and event belongs to exactly one."""

    id: str
    name: str
    created_at: int
    """Epoch milliseconds."""


@dataclass(frozen=True)
class ApiKey:
    """One of a workspace's keys, without the key itself (only its digest is stored)."""

    id: str
    workspace_id: str
    name: str
    prefix: str
    """The key's first characters (``chk_`` and four more), to tell keys apart."""
    created_at: int
    """Epoch milliseconds, like the two times below."""
    last_used_at: int | None = None
    """When it last authenticated a request, to within a minute (None: never)."""
    revoked_at: int | None = None
    """When it was revoked (None: it authenticates)."""

    @property
    def active(self) -> bool:
        """Whether the key still authenticates."""
        return self.revoked_at is None


def hash_key(key: str) -> str:
    """The sha256 hex digest an API key is stored as."""
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key(workspace_id: str, name: str, created_at: int) -> tuple[ApiKey, str]:
    key = "chk_" + secrets.token_urlsafe(32)
    return ApiKey(new_id("key"), workspace_id, name, key[:8], created_at), key


def new_workspace(name: str) -> tuple[Workspace, ApiKey, str]:
    """A workspace to create, its first key's record and the key itself (``chk_...``)."""
    workspace = Workspace(new_id("ws"), name, now_ms())
    return (workspace, *_new_key(workspace.id, DEFAULT_KEY_NAME, workspace.created_at))


def new_key(workspace_id: str, name: str) -> tuple[ApiKey, str]:
    """Another key for a workspace: its record and the key itself (``chk_...``)."""
    return _new_key(workspace_id, name, now_ms())


_KEY_COLUMNS = "k.id, k.workspace_id, k.name, k.prefix, k.created_at, k.last_used_at, k.revoked_at"


def _key(row: Any) -> ApiKey:
    return ApiKey(
        row["id"],
        row["workspace_id"],
        row["name"],
        row["prefix"],
        row["created_at"],
        row["last_used_at"],
        row["revoked_at"],
    )


def _insert_key(conn: Connection, record: ApiKey, key: str) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, workspace_id, name, key_hash, prefix, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            record.id,
            record.workspace_id,
            record.name,
            hash_key(key),
            record.prefix,
            record.created_at,
        ),
    )


def insert(conn: Connection, workspace: Workspace, record: ApiKey, key: str) -> None:
    """Store the workspace and its first key's digest."""
    conn.execute(
        "INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)",
        (workspace.id, workspace.name, workspace.created_at),
    )
    _insert_key(conn, record, key)


def _exists(conn: Connection, workspace_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM workspaces WHERE id = ?", (workspace_id,)).fetchone()
    return row is not None


def insert_key(conn: Connection, record: ApiKey, key: str) -> bool:
    """Store another key's digest; False when its workspace does not exist."""
    if not _exists(conn, record.workspace_id):
        return False
    _insert_key(conn, record, key)
    return True


def all_(conn: Connection) -> list[Workspace]:
    """Every workspace, oldest first."""
    rows = conn.execute("SELECT id, name, created_at FROM workspaces ORDER BY created_at, id")
    return [Workspace(r["id"], r["name"], r["created_at"]) for r in rows]


def keys_of(conn: Connection, workspace_id: str) -> list[ApiKey] | None:
    """The workspace's keys, revoked ones too, oldest first; None when it does not exist."""
    if not _exists(conn, workspace_id):
        return None
    rows = conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM api_keys k WHERE k.workspace_id = ? "
        "ORDER BY k.created_at, k.id",
        (workspace_id,),
    )
    return [_key(r) for r in rows]


def revoke(
    conn: Connection, workspace_id: str, key_id: str, revoked_at: int, keep_one: bool
) -> ApiKey | None:
    """Revoke the key (a revoked key keeps its first revocation time); None when the workspace
    has no such key. With ``keep_one``, refuse to revoke the workspace's last active key."""
    row = conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM api_keys k WHERE k.id = ? AND k.workspace_id = ?",
        (key_id, workspace_id),
    ).fetchone()
    if row is None:
        return None
    found = _key(row)
    if not found.active:
        return found
    if keep_one:
        if conn.dialect.shared:
            # Two revokes of a workspace's last two keys in two processes must not both see
            # the other key active: the second waits here for the first to commit.
            conn.execute("SELECT 1 FROM workspaces WHERE id = ? FOR UPDATE", (workspace_id,))
        others = conn.execute(
            "SELECT count(*) FROM api_keys WHERE workspace_id = ? AND revoked_at IS NULL "
            "AND id <> ?",
            (workspace_id, key_id),
        ).fetchone()[0]
        if not others:
            raise ConflictError(
                "this is the workspace's last active key: create another key before revoking it"
            )
    conn.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (revoked_at, key_id),
    )
    return replace(found, revoked_at=revoked_at)


def for_key(conn: Connection, key_hash: str) -> tuple[Workspace, ApiKey, str] | None:
    """The workspace and the key record of a key digest, with the stored digest, or None.
    A revoked key is returned too: the caller refuses it."""
    row = conn.execute(
        f"SELECT w.name AS workspace_name, w.created_at AS workspace_created_at, "
        f"k.key_hash, {_KEY_COLUMNS} FROM api_keys k "
        "JOIN workspaces w ON w.id = k.workspace_id WHERE k.key_hash = ?",
        (key_hash,),
    ).fetchone()
    if row is None:
        return None
    workspace = Workspace(row["workspace_id"], row["workspace_name"], row["workspace_created_at"])
    return workspace, _key(row), row["key_hash"]


def record_use(conn: Connection, uses: Sequence[tuple[str, int]]) -> None:
    """Note when each ``(key id, epoch ms)`` was last used; a time never moves back (another
    process may have recorded a later use)."""
    for key_id, used_at in uses:
        conn.execute(
            "UPDATE api_keys SET last_used_at = ? WHERE id = ? "
            "AND (last_used_at IS NULL OR last_used_at < ?)",
            (used_at, key_id, used_at),
        )
