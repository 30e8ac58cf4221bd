"""Workspace authentication: ``x-api-key`` (+ optional ``x-workspace-id``) or a Bearer key;
``/api/v2/workspace/keys``: the workspace's named keys.

Keys are stored as sha256 digests and compared in constant time. A key found valid is cached
in the app for :data:`KEY_CACHE_SECONDS`, so the hot path costs no database read; after that
the next request reads it again. A key revoked through this app stops working at once here,
and in other processes (the CLI, other API processes) within that bound. When a key was last
used is written at most once per :data:`LAST_USED_EVERY_SECONDS` per key and process, in the
background, never on the request's path.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.datastructures import State

from convhook.api.errors import ApiError
from convhook.api.fields import RequestModel
from convhook.errors import ConvhookError
from convhook.store.producer import ApiKey, ProducerStore, Workspace, hash_key, now_ms
from convhook.timefmt import format_ms

__all__ = [
    "KEY_CACHE_SECONDS",
    "LAST_USED_EVERY_SECONDS",
    "SECURITY_SCHEMES",
    "CurrentWorkspace",
    "KeyCache",
    "Workspace",
    "api_key",
    "authenticate",
    "current_workspace",
    "router",
]

log = logging.getLogger("convhook.api")

SECURITY_SCHEMES = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "bearer": {"type": "http", "scheme": "bearer"},
}
"""The OpenAPI security schemes this dependency accepts (the app factory publishes them)."""

KEY_CACHE_SECONDS = 5.0
"""How long a key found valid is trusted without reading it again: the longest a key revoked
by another process keeps working here."""
LAST_USED_EVERY_SECONDS = 60.0
"""How often, at most, a key's last use is written (per key and process)."""


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def api_key(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key a request carries in ``x-api-key`` or ``Authorization: Bearer``, or None;
    401 when it carries two different keys (which one was meant cannot be known)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    bearer = credentials.strip() if scheme.lower() == "bearer" else ""
    if x_api_key and bearer and not hmac.compare_digest(x_api_key.encode(), bearer.encode()):
        raise _unauthorized(
            "x-api-key and Authorization: Bearer carry different keys: send one of them"
        )
    return x_api_key or bearer or None


@dataclass
class _Entry:
    workspace: Workspace
    key_id: str
    fresh_until: float
    """Monotonic time after which the key is read again."""
    record_after: float
    """Monotonic time after which a use is written as the key's last use."""


class KeyCache:
    """Valid keys by digest, each trusted for ``ttl`` seconds, and the writes of their last
    use (at most one per ``record_every`` seconds per key)."""

    def __init__(
        self,
        store: ProducerStore,
        *,
        ttl: float = KEY_CACHE_SECONDS,
        record_every: float = LAST_USED_EVERY_SECONDS,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._record_every = record_every
        self._entries: dict[str, _Entry] = {}
        # Concurrent requests with a key not cached share one read of it.
        self._lookups: dict[str, asyncio.Future[_Entry | None]] = {}
        self._writes: set[asyncio.Task[None]] = set()
        # Keys revoked through this process: a read that began before the revocation
        # committed must not bring one back.
        self._revoked: set[str] = set()

    async def workspace(self, digest: str) -> Workspace | None:
        """The workspace of a key digest, or None when no active key has it."""
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is None or now >= entry.fresh_until:
            entry = await self._lookup(digest)
            if entry is None:
                return None
            now = time.monotonic()
        if now >= entry.record_after:
            entry.record_after = now + self._record_every
            self._record(entry.key_id)
        return entry.workspace

    def forget(self, key_id: str) -> None:
        """Stop trusting a key at once (it was revoked in this process)."""
        self._revoked.add(key_id)
        for digest, entry in list(self._entries.items()):
            if entry.key_id == key_id:
                del self._entries[digest]

    async def _lookup(self, digest: str) -> _Entry | None:
        task = self._lookups.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._read(digest))
            self._lookups[digest] = task
            task.add_done_callback(lambda _: self._lookups.pop(digest, None))
        # Shielded: one waiting request going away must not cancel the others' read.
        return await asyncio.shield(task)

    async def _read(self, digest: str) -> _Entry | None:
        found = await self._store.key_for_hash(digest)
        if found is None or not hmac.compare_digest(found[2], digest) or not found[1].active:
            self._entries.pop(digest, None)
            return None
        workspace, key, _ = found
        if key.id in self._revoked:
            return None
        now = time.monotonic()
        record_after = 0.0  # never used, or not lately: this use is written at once
        if key.last_used_at is not None:
            age = (now_ms() - key.last_used_at) / 1000
            if age < self._record_every:
                # Recorded lately (maybe by another process): the next write can wait.
                record_after = now + self._record_every - max(0.0, age)
        old = self._entries.get(digest)
        if old is not None:
            # This process's own throttle holds even when its last write failed.
            record_after = max(record_after, old.record_after)
        entry = _Entry(workspace, key.id, now + self._ttl, record_after)
        self._entries[digest] = entry
        return entry

    def _record(self, key_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._write_use(key_id, now_ms()))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_use(self, key_id: str, used_at: int) -> None:
        try:
            await self._store.record_key_use([(key_id, used_at)])
        except ConvhookError as exc:
            # A last-used time is informational: a failed write waits for the next minute.
            log.warning(
                "could not record the use of key %s: %s",
                key_id,
                exc,
                extra={"action": "key_use_not_recorded", "key_id": key_id},
            )


async def authenticate(state: State, key: str | None, claimed: str | None) -> Workspace:
    """The workspace of ``key`` (with ``claimed``, the ``x-workspace-id`` sent, if any, that
    must match it) in the app whose ``state`` is given; 401 when missing, wrong or revoked."""
    if not key:
        raise _unauthorized("missing API key: send x-api-key or Authorization: Bearer <key>")
    cache: KeyCache = state.key_cache
    workspace = await cache.workspace(hash_key(key))
    if workspace is None:
        raise _unauthorized("the API key is not valid")
    if claimed is not None and not hmac.compare_digest(claimed.encode(), workspace.id.encode()):
        raise _unauthorized("the API key does not belong to the workspace in x-workspace-id")
    return workspace


async def current_workspace(request: Request) -> Workspace:
    """The workspace whose key the request carries (``x-api-key`` or ``Authorization:
    Bearer``, with an optional matching ``x-workspace-id``); 401 when missing or wrong."""
    # Headers are read directly rather than through FastAPI's security classes: this runs on
    # every request, and one dependency costs far less than three.
    headers = request.headers
    key = api_key(headers.get("x-api-key"), headers.get("authorization"))
    return await authenticate(request.app.state, key, headers.get("x-workspace-id"))


CurrentWorkspace = Annotated[Workspace, Depends(current_workspace)]


# -- /api/v2/workspace/keys ----------------------------------------------------------------

router = APIRouter(prefix="/api/v2/workspace/keys", tags=["keys"])

KEY_ID_PATTERN = "^key_[0-9a-f]{28}$"
"""A key id (``convhook.ids.new_id("key")``)."""


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class KeyInfo(_Wire):
    """One of the workspace's keys, never the key itself."""

    id: str = Field(pattern=KEY_ID_PATTERN)
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    last_used_at: str | None = Field(
        json_schema_extra={"format": "date-time"},
        description="When it last authenticated a request, to within a minute; null: never.",
    )
    revoked_at: str | None = Field(
        json_schema_extra={"format": "date-time"}, description="Null while the key works."
    )


class NewKey(KeyInfo):
    """A key just created: ``key`` is shown this once (only its digest is stored)."""

    key: str


class KeyList(_Wire):
    """The workspace's keys, revoked ones too, oldest first."""

    data: list[KeyInfo]


class KeyIn(RequestModel):
    """A key to create."""

    name: str = Field(min_length=1, max_length=100, description="What the key is for.")


def _ts(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)


def key_doc(k: ApiKey) -> dict[str, Any]:
    """The wire form of a key record (without the key)."""
    return {
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "createdAt": _ts(k.created_at),
        "lastUsedAt": _ts(k.last_used_at),
        "revokedAt": _ts(k.revoked_at),
    }


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc), status_code=status, media_type="application/json")


def _store(request: Request) -> ProducerStore:
    store: ProducerStore = request.app.state.store
    return store


@router.get("", response_model=KeyList)
async def list_keys(request: Request, workspace: CurrentWorkspace) -> Response:
    """The workspace's keys (never the keys themselves), revoked ones too, oldest first."""
    keys = await _store(request).list_keys(workspace.id)
    return _json({"data": [key_doc(k) for k in keys]})


@router.post("", status_code=201, response_model=NewKey)
async def create_key(body: KeyIn, request: Request, workspace: CurrentWorkspace) -> Response:
    """Add a key to the workspace (its other keys keep working); the answer carries ``key``,
    shown this once."""
    record, key = await _store(request).create_key(workspace.id, body.name)
    log.info(
        "key created",
        extra={"action": "key_created", "workspace_id": workspace.id, "key_id": record.id},
    )
    return _json({**key_doc(record), "key": key}, 201)


@router.delete("/{key_id}", response_model=KeyInfo)
async def revoke_key(
    key_id: Annotated[str, Path(max_length=64)], request: Request, workspace: CurrentWorkspace
) -> Response:
    """Revoke a key: it answers 401 from now on in this process, within
    ``KEY_CACHE_SECONDS`` (5 s) in others. The workspace's last active key cannot be revoked
    here (409; the CLI can)."""
    revoked = await _store(request).revoke_key(workspace.id, key_id, keep_one=True)
    cache: KeyCache = request.app.state.key_cache
    cache.forget(revoked.id)
    log.info(
        "key revoked",
        extra={"action": "key_revoked", "workspace_id": workspace.id, "key_id": revoked.id},
    )
    return _json(key_doc(revoked))
