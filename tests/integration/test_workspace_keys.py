"""A workspace's named keys on SQLite and PostgreSQL: the store's operations, the migration of
keys made before them, and the API's keys resource on a real uvicorn server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate

from convhook.api import create_app
from convhook.api.auth import KeyCache
from convhook.errors import ConflictError, NotFoundError
from convhook.store import open_database
from convhook.store.engine.migrations import apply_sqlite, load
from convhook.store.engine.postgres import apply_postgres
from convhook.store.engine.url import DatabaseURL
from convhook.store.producer import ProducerStore, hash_key
from tests.support.servers import eventually, serve_app

KEY_ID = re.compile(r"^key_[0-9a-f]{28}$")


def _store(url: str) -> ProducerStore:
    return ProducerStore.at(url, synchronous="NORMAL", auto_upgrade=True)


async def test_keys_are_created_listed_and_revoked(database_url: str) -> None:
    """A workspace starts with one key named default; more keys can be added and each works;
    a revoked key keeps its record and first revocation time, and stops authenticating."""
    async with _store(database_url) as store:
        workspace, first = await store.create_workspace("acme")
        second_record, second = await store.create_key(workspace.id, "rotation")
        assert KEY_ID.match(second_record.id)
        assert second.startswith("chk_")
        assert second_record.prefix == second[:8]
        listed = await store.list_keys(workspace.id)
        assert [k.name for k in listed] == ["default", "rotation"]
        assert all(k.active and k.last_used_at is None for k in listed)
        for key in (first, second):
            found = await store.key_for_hash(hash_key(key))
            assert found is not None
            assert found[0] == workspace
        revoked = await store.revoke_key(workspace.id, listed[0].id)
        assert revoked.revoked_at is not None
        assert not revoked.active
        again = await store.revoke_key(workspace.id, listed[0].id)
        assert again.revoked_at == revoked.revoked_at
        found = await store.key_for_hash(hash_key(first))
        assert found is not None
        assert not found[1].active
        assert [k.active for k in await store.list_keys(workspace.id)] == [False, True]


async def test_key_operations_refuse_what_does_not_exist(database_url: str) -> None:
    """Keys of an unknown workspace, an unknown key id, a key of another workspace and the
    last active key (when asked to keep one) are refused without a change."""
    async with _store(database_url) as store:
        mine, _ = await store.create_workspace("mine")
        theirs, _ = await store.create_workspace("theirs")
        [their_key] = await store.list_keys(theirs.id)
        with pytest.raises(NotFoundError):
            await store.create_key("ws_nope", "x")
        with pytest.raises(NotFoundError):
            await store.list_keys("ws_nope")
        with pytest.raises(NotFoundError):
            await store.revoke_key(mine.id, "key_nope")
        with pytest.raises(NotFoundError):
            await store.revoke_key(mine.id, their_key.id)
        [my_key] = await store.list_keys(mine.id)
        with pytest.raises(ConflictError):
            await store.revoke_key(mine.id, my_key.id, keep_one=True)
        assert (await store.list_keys(mine.id))[0].active
        assert (await store.list_keys(theirs.id))[0].active


async def test_last_use_never_moves_back(database_url: str) -> None:
    """Recording an older use after a newer one (from another process) keeps the newer."""
    async with _store(database_url) as store:
        workspace, _ = await store.create_workspace("acme")
        [key] = await store.list_keys(workspace.id)
        await store.record_key_use([(key.id, 2_000)])
        await store.record_key_use([(key.id, 1_000)])
        assert (await store.list_keys(workspace.id))[0].last_used_at == 2_000


async def test_keys_made_before_named_keys_keep_working(database_url: str) -> None:
    """A database at schema version 3 (one unnamed key per workspace) upgrades to keys
    named default with key_ ids, created when the workspace was, and they still authenticate."""
    url = DatabaseURL.parse(database_url)
    dialect = "postgres" if url.engine == "postgres" else "sqlite"
    old = [m for m in load(dialect, "producer") if m.version <= 3]
    db = open_database(url, "producer")
    conn = db.connect()
    try:
        if dialect == "sqlite":
            apply_sqlite(conn, old)
        else:
            apply_postgres(conn, old)  # type: ignore[arg-type]
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO workspaces (id, name, created_at) VALUES ('ws_old', 'old', 1700000000000)"
        )
        conn.execute(
            "INSERT INTO api_keys (key_hash, workspace_id, prefix, created_at) "
            "VALUES (?, 'ws_old', 'chk_olde', 1700000000000)",
            (hash_key("chk_oldeKey"),),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    async with _store(database_url) as store:
        [key] = await store.list_keys("ws_old")
        assert (key.name, key.prefix, key.created_at) == ("default", "chk_olde", 1700000000000)
        assert KEY_ID.match(key.id)
        assert key.id.startswith("key_018bcfe56800")
        assert key.active
        assert key.last_used_at is None
        found = await store.key_for_hash(hash_key("chk_oldeKey"))
        assert found is not None
        assert found[0].id == "ws_old"
        assert found[1].id == key.id
        second, _ = await store.create_key("ws_old", "second")
        assert second.id != key.id


@dataclass
class Api:
    """A running API over a store, the workspace's first key and a client session."""

    base: str
    url: str
    store: ProducerStore
    workspace_id: str
    key: str
    http: aiohttp.ClientSession
    app: Any

    async def call(self, method: str, path: str, key: str, **kw: Any) -> tuple[int, Any]:
        """One request with ``key``; the status and the JSON answer."""
        headers = {"x-api-key": key}
        async with self.http.request(method, self.base + path, headers=headers, **kw) as r:
            return r.status, await r.json()


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    """The API on a loopback port over a fresh database with one workspace."""
    store = _store(database_url)
    await store.open()
    try:
        workspace, key = await store.create_workspace("acme")
        app = create_app(store)
        async with serve_app(app) as base, aiohttp.ClientSession() as http:
            yield Api(base, database_url, store, workspace.id, key, http, app)
    finally:
        await store.close()


KEYS = "/api/v2/workspace/keys"


async def test_api_rotates_a_key_without_downtime(api: Api) -> None:
    """A key created over the API works at once beside the old one; revoking the old one with
    the new one answers 401 to the old key on its very next request, and the list shows it
    revoked; the last active key cannot be revoked over the API (409)."""
    status, created = await api.call("POST", KEYS, api.key, json={"name": "next"})
    assert status == 201, created
    new_key = created["key"]
    assert new_key.startswith("chk_")
    assert created["name"] == "next"
    assert created["revokedAt"] is None
    assert KEY_ID.match(created["id"])
    for key in (api.key, new_key):
        assert (await api.call("GET", "/api/v2/customers", key))[0] == 200
    status, listed = await api.call("GET", KEYS, new_key)
    assert status == 200
    assert [k["name"] for k in listed["data"]] == ["default", "next"]
    assert all("key" not in k for k in listed["data"])
    old_id = listed["data"][0]["id"]
    status, revoked = await api.call("DELETE", f"{KEYS}/{old_id}", new_key)
    assert status == 200
    assert revoked["revokedAt"] is not None
    status, refused = await api.call("GET", "/api/v2/customers", api.key)
    assert status == 401
    assert refused["error"] == "the API key is not valid"
    status, listed = await api.call("GET", KEYS, new_key)
    assert [k["revokedAt"] is not None for k in listed["data"]] == [True, False]
    status, last = await api.call("DELETE", f"{KEYS}/{created['id']}", new_key)
    assert status == 409
    assert "last active key" in last["error"]
    assert (await api.call("GET", "/api/v2/customers", new_key))[0] == 200


async def test_api_keys_are_per_workspace(api: Api) -> None:
    """A workspace neither lists nor revokes another workspace's keys (404, no change)."""
    other, other_key = await api.store.create_workspace("other")
    [theirs] = await api.store.list_keys(other.id)
    status, listed = await api.call("GET", KEYS, api.key)
    assert [k["id"] for k in listed["data"]] != [theirs.id]
    status, _ = await api.call("DELETE", f"{KEYS}/{theirs.id}", api.key)
    assert status == 404
    assert (await api.call("GET", "/api/v2/customers", other_key))[0] == 200


async def test_api_refuses_a_bad_key_name(api: Api) -> None:
    """A key without a name, or with one over 100 characters, is refused with 422."""
    for body in ({}, {"name": ""}, {"name": "x" * 101}, {"name": "a", "extra": 1}):
        status, answer = await api.call("POST", KEYS, api.key, json=body)
        assert status == 422, body
        assert answer["problems"]
    assert len(await api.store.list_keys(api.workspace_id)) == 1


async def test_a_key_revoked_elsewhere_stops_within_the_cache_bound(api: Api) -> None:
    """A key revoked by another process (here a second store on the same database) keeps
    working while cached and answers 401 once the cache entry is older than its bound."""
    api.app.state.key_cache = KeyCache(api.store, ttl=0.5)
    status, created = await api.call("POST", KEYS, api.key, json={"name": "spare"})
    assert status == 201
    assert (await api.call("GET", "/api/v2/customers", api.key))[0] == 200
    [first, _] = await api.store.list_keys(api.workspace_id)
    async with _store(api.url) as elsewhere:
        await elsewhere.revoke_key(api.workspace_id, first.id)
    started = asyncio.get_running_loop().time()

    async def refused() -> bool:
        return (await api.call("GET", "/api/v2/customers", api.key))[0] == 401

    await eventually(refused, timeout=5)
    assert asyncio.get_running_loop().time() - started < 0.5 + 0.5
    assert (await api.call("GET", "/api/v2/customers", created["key"]))[0] == 200


async def test_last_use_is_recorded_without_a_write_per_request(api: Api) -> None:
    """The first request with a key records its last use (in the background); the next
    requests within the minute write nothing."""
    assert (await api.call("GET", "/api/v2/customers", api.key))[0] == 200

    async def recorded() -> bool:
        [key] = await api.store.list_keys(api.workspace_id)
        return key.last_used_at is not None

    await eventually(recorded, timeout=5)
    writes = api.store.db.writes
    for _ in range(20):
        assert (await api.call("GET", "/api/v2/customers", api.key))[0] == 200
    assert api.store.db.writes == writes
    _status, listed = await api.call("GET", KEYS, api.key)
    assert listed["data"][0]["lastUsedAt"] is not None


async def test_openapi_describes_the_keys_resource(api: Api) -> None:
    """/openapi.json publishes the three keys operations with their response models, and
    the 409 of revoking the last key; the document stays valid OpenAPI."""
    async with api.http.get(f"{api.base}/openapi.json") as r:
        doc = await r.json()
    validate(doc)
    paths = doc["paths"]

    def schema(path: str, method: str, status: str) -> Any:
        return paths[path][method]["responses"][status]["content"]["application/json"]["schema"]

    assert schema(KEYS, "get", "200") == {"$ref": "#/components/schemas/KeyList"}
    assert schema(KEYS, "post", "201") == {"$ref": "#/components/schemas/NewKey"}
    revoke = f"{KEYS}/{{key_id}}"
    assert schema(revoke, "delete", "200") == {"$ref": "#/components/schemas/KeyInfo"}
    assert {"404", "409"} <= set(paths[revoke]["delete"]["responses"])
    new_key = doc["components"]["schemas"]["NewKey"]
    assert {"key", "id", "name", "createdAt", "lastUsedAt", "revokedAt"} <= set(
        new_key["properties"]
    )


async def test_racing_revokes_never_leave_a_workspace_without_a_key(database_url: str) -> None:
    """Two stores (two API processes) revoking a workspace's last two keys at once, each
    keeping one: one succeeds, the other is refused, a key stays active (30 workspaces)."""
    async with _store(database_url) as first, ProducerStore.at(database_url) as second:
        for n in range(30):
            workspace, _ = await first.create_workspace(f"w{n}")
            [default] = await first.list_keys(workspace.id)
            other, _ = await first.create_key(workspace.id, "other")
            outcomes = await asyncio.gather(
                first.revoke_key(workspace.id, default.id, keep_one=True),
                second.revoke_key(workspace.id, other.id, keep_one=True),
                return_exceptions=True,
            )
            assert sum(isinstance(o, ConflictError) for o in outcomes) == 1, outcomes
            active = [k for k in await first.list_keys(workspace.id) if k.revoked_at is None]
            assert len(active) == 1
