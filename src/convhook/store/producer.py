"""The producer store: workspaces, API keys, customers, conversations and the event outbox.

Every SQL statement the producer runs lives here, behind async methods, so a PostgreSQL
implementation with the same methods can replace :class:`SQLiteProducerStore`. Writes go
through :meth:`SQLiteDatabase.write`, which group-commits concurrent requests; a method's
checks and its writes run in the same write function, so they see no concurrent change.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from convhook.errors import ConvhookError, FieldProblem, PayloadError
from convhook.ids import new_id
from convhook.lifecycle import BUSY_STATUSES, Phase
from convhook.store import migrations
from convhook.store.sqlite import SQLiteDatabase

MAX_LIMIT = 500


class NotFoundError(ConvhookError):
    """No such object in this workspace (HTTP 404; other workspaces' objects look the same)."""

    status_code = 404


class ConflictError(PayloadError):
    """The change conflicts with stored data, e.g. a duplicate identifier (HTTP 409)."""

    status_code = 409


class ActiveLimitError(ConvhookError):
    """The workspace already has its maximum of dialing or active conversations (HTTP 429)."""

    status_code = 429

    def __init__(self, workspace_id: str, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"workspace {workspace_id} already has {limit} conversations dialing or active: "
            "retry after one of them ends"
        )


@dataclass(frozen=True)
class Workspace:
    """A tenant: every customer, conversation and event belongs to exactly one."""

    id: str
    name: str
    created_at: int
    """Epoch milliseconds."""


@dataclass(frozen=True)
class Page:
    """One page of a list: wire JSON documents and the cursor of the next page, if any."""

    items: list[str]
    next_cursor: str | None

    def to_json(self) -> str:
        """``{"data": [...], "nextCursor": ...}`` without re-encoding the stored documents."""
        return f'{{"data":[{",".join(self.items)}],"nextCursor":{json.dumps(self.next_cursor)}}}'


@dataclass(frozen=True)
class StoredConversation:
    """A conversation as the outbox sees it inside a write: its phase and wire fields."""

    id: str
    workspace_id: str
    phase: Phase
    event_seq: int
    fields: dict[str, Any]
    """The wire fields, ``customer`` embedded as it is now."""


@dataclass(frozen=True)
class NewEvent:
    """An event to append to the outbox with the change that caused it."""

    id: str
    event_type: str
    body: str
    """The exact wire JSON ``{eventId, eventType, payload}``."""


@dataclass(frozen=True)
class Change:
    """What a transition does to a conversation: its new phase, fields and events."""

    phase: Phase
    fields: dict[str, Any]
    """The full wire conversation after the change (``customer`` embedded)."""
    json: str
    """``fields`` encoded, as answered to the client."""
    events: tuple[NewEvent, ...]
    takes_slot: bool
    """True when the change must respect the workspace's limit of busy conversations."""


@dataclass(frozen=True)
class NewConversation:
    """A conversation to create, with the checks its references need."""

    fields: dict[str, Any]
    """Its wire fields with ``"customer": null``."""
    ignore_dnd: bool = False


@dataclass(frozen=True)
class NewCustomer:
    """A customer to insert (``document``, complete) or to merge by identifier (``given``)."""

    document: dict[str, Any]
    given: dict[str, Any]
    """The wire fields the request set, plus ``updatedAt``."""


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one item of a batch: its document, or the problems that refused it."""

    index: int
    document: dict[str, Any] | None = None
    problems: tuple[FieldProblem, ...] = field(default=())


@dataclass(frozen=True)
class EventRow:
    """An outbox row as ``events tail`` shows it."""

    seq: int
    id: str
    workspace_id: str
    conversation_id: str
    conversation_seq: int
    event_type: str
    created_at: int


def hash_key(key: str) -> str:
    """The sha256 hex digest an API key is stored as."""
    return hashlib.sha256(key.encode()).hexdigest()


def encode_cursor(seq: int) -> str:
    """An opaque cursor pointing after row ``seq``."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The row sequence a cursor points after; 0 for the first page."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("s"):
            raise ValueError(text)
        return int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise PayloadError(
            "cursor is not one this API returned: pass nextCursor from the previous page",
            [FieldProblem("cursor", "malformed cursor")],
        ) from None


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class SQLiteProducerStore:
    """The producer's data in one SQLite file; use as ``async with SQLiteProducerStore(path)``."""

    dialect = "sqlite"

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.db = SQLiteDatabase(
            path, migrations.load("sqlite", "producer"), synchronous=synchronous
        )

    async def __aenter__(self) -> SQLiteProducerStore:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Apply migrations and start the writer; calling it again does nothing."""
        await self.db.open()

    async def close(self) -> None:
        """Finish queued writes and stop."""
        await self.db.close()

    # -- workspaces and keys -------------------------------------------------------------

    async def create_workspace(self, name: str) -> tuple[Workspace, str]:
        """Create a workspace and its first API key; the key is returned here and never again."""
        workspace = Workspace(new_id("ws"), name, now_ms())
        key = "chk_" + secrets.token_urlsafe(32)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)",
                (workspace.id, workspace.name, workspace.created_at),
            )
            conn.execute(
                "INSERT INTO api_keys (key_hash, workspace_id, prefix, created_at) "
                "VALUES (?, ?, ?, ?)",
                (hash_key(key), workspace.id, key[:8], workspace.created_at),
            )

        await self.db.write(write)
        return workspace, key

    async def list_workspaces(self) -> list[Workspace]:
        """Every workspace, oldest first."""

        def read(conn: sqlite3.Connection) -> list[Workspace]:
            rows = conn.execute("SELECT id, name, created_at FROM workspaces ORDER BY created_at")
            return [Workspace(r["id"], r["name"], r["created_at"]) for r in rows]

        return await self.db.read(read)

    async def workspace_for_key(self, key_hash: str) -> tuple[Workspace, str] | None:
        """The workspace a key hash belongs to, with the stored hash (for a constant-time
        comparison by the caller), or None."""

        def read(conn: sqlite3.Connection) -> tuple[Workspace, str] | None:
            row = conn.execute(
                "SELECT w.id, w.name, w.created_at, k.key_hash FROM api_keys k "
                "JOIN workspaces w ON w.id = k.workspace_id WHERE k.key_hash = ?",
                (key_hash,),
            ).fetchone()
            if row is None:
                return None
            return Workspace(row["id"], row["name"], row["created_at"]), row["key_hash"]

        return await self.db.read(read)

    # -- customers -----------------------------------------------------------------------

    async def save_customers(
        self, workspace_id: str, items: Sequence[NewCustomer], *, upsert: bool
    ) -> list[ItemResult]:
        """Insert customers; with ``upsert`` an item whose identifier exists updates that
        customer with the item's given fields instead. Duplicates are item problems."""

        def write(conn: sqlite3.Connection) -> list[ItemResult]:
            results = []
            for index, new in enumerate(items):
                item = new.document
                existing = None
                if item.get("identifier") is not None:
                    existing = conn.execute(
                        "SELECT id, body, created_at FROM customers "
                        "WHERE workspace_id = ? AND identifier = ?",
                        (workspace_id, item["identifier"]),
                    ).fetchone()
                if existing is not None and not upsert:
                    problem = FieldProblem(
                        "identifier", f"a customer with identifier {item['identifier']!r} exists"
                    )
                    results.append(ItemResult(index, problems=(problem,)))
                    continue
                if existing is not None:
                    doc = {**json.loads(existing["body"]), **new.given}
                    _update_customer(conn, doc)
                else:
                    doc = item
                    conn.execute(
                        "INSERT INTO customers "
                        "(id, workspace_id, identifier, dnd, body, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            doc["id"],
                            workspace_id,
                            doc.get("identifier"),
                            bool(doc.get("isDoNotDisturbEnabled")),
                            json.dumps(doc),
                            now_ms(),
                            now_ms(),
                        ),
                    )
                results.append(ItemResult(index, document=doc))
            return results

        return await self.db.write(write)

    async def get_customer(self, workspace_id: str, customer_id: str) -> dict[str, Any]:
        """The customer's wire dict, or :class:`NotFoundError`."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT body FROM customers WHERE workspace_id = ? AND id = ?",
                (workspace_id, customer_id),
            ).fetchone()
            return None if row is None else str(row["body"])

        body = await self.db.read(read)
        if body is None:
            raise NotFoundError(f"no customer {customer_id} in this workspace")
        doc: dict[str, Any] = json.loads(body)
        return doc

    async def update_customer(
        self, workspace_id: str, customer_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply wire-field ``changes`` to a customer and return it; duplicate identifiers
        raise :class:`ConflictError`."""

        def write(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                "SELECT body FROM customers WHERE workspace_id = ? AND id = ?",
                (workspace_id, customer_id),
            ).fetchone()
            if row is None:
                return None
            doc = {**json.loads(row["body"]), **changes}
            try:
                _update_customer(conn, doc)
            except sqlite3.IntegrityError:
                raise ConflictError(
                    f"another customer has identifier {doc.get('identifier')!r}",
                    [FieldProblem("identifier", "already used by another customer")],
                ) from None
            return doc

        doc = await self.db.write(write)
        if doc is None:
            raise NotFoundError(f"no customer {customer_id} in this workspace")
        return doc

    async def list_customers(
        self, workspace_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """The workspace's customers, oldest first."""
        return await self._page(
            "SELECT seq, body FROM customers WHERE workspace_id = ? AND seq > ?",
            [workspace_id, decode_cursor(cursor)],
            limit,
        )

    # -- conversations -------------------------------------------------------------------

    async def create_conversations(
        self, workspace_id: str, items: Sequence[NewConversation]
    ) -> list[ItemResult]:
        """Insert conversations whose customer and agent belong to this workspace (an agent
        id is claimed by the first workspace that uses it); others become item problems."""

        def write(conn: sqlite3.Connection) -> list[ItemResult]:
            results = []
            now = now_ms()
            for index, item in enumerate(items):
                problems = _reference_problems(conn, workspace_id, item, now)
                if problems:
                    results.append(ItemResult(index, problems=tuple(problems)))
                    continue
                doc = item.fields
                conn.execute(
                    "INSERT INTO conversations (id, workspace_id, agent_id, customer_id, "
                    "campaign_id, status, phase, body, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        doc["id"],
                        workspace_id,
                        doc["agentId"],
                        doc.get("customerId"),
                        doc.get("campaignId"),
                        doc["conversationStatus"],
                        Phase.CREATED.value,
                        json.dumps(doc),
                        now,
                        now,
                    ),
                )
                results.append(ItemResult(index, document=_embed(conn, doc)))
            return results

        return await self.db.write(write)

    async def get_conversation(self, workspace_id: str, conversation_id: str) -> dict[str, Any]:
        """The conversation's wire dict with its customer embedded, or :class:`NotFoundError`."""

        def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = _conversation_row(conn, workspace_id, conversation_id)
            return None if row is None else _embed(conn, json.loads(row["body"]))

        doc = await self.db.read(read)
        if doc is None:
            raise NotFoundError(f"no conversation {conversation_id} in this workspace")
        return doc

    async def list_conversations(
        self,
        workspace_id: str,
        *,
        status: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        campaign_id: str | None = None,
        created_after: int | None = None,
        created_before: int | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        """The workspace's conversations matching every filter given, oldest first."""
        sql = "SELECT seq, body FROM conversations WHERE workspace_id = ? AND seq > ?"
        args: list[Any] = [workspace_id, decode_cursor(cursor)]
        for column, value in (
            ("status = ?", status),
            ("agent_id = ?", agent_id),
            ("customer_id = ?", customer_id),
            ("campaign_id = ?", campaign_id),
            ("created_at >= ?", created_after),
            ("created_at < ?", created_before),
        ):
            if value is not None:
                sql += f" AND {column}"
                args.append(value)
        return await self._page(sql, args, limit, embed=True)

    async def change_conversation(
        self,
        workspace_id: str,
        conversation_id: str,
        change: Callable[[StoredConversation], Change],
        *,
        max_active: int,
    ) -> Change:
        """Apply ``change`` (pure; it may raise to refuse) to the conversation as it is inside
        the write, then store the new row and its events in the same transaction."""

        def write(conn: sqlite3.Connection) -> Change:
            row = _conversation_row(conn, workspace_id, conversation_id)
            if row is None:
                raise NotFoundError(f"no conversation {conversation_id} in this workspace")
            current = StoredConversation(
                row["id"],
                workspace_id,
                Phase(row["phase"]),
                row["event_seq"],
                _embed(conn, json.loads(row["body"])),
            )
            result = change(current)
            if result.takes_slot:
                busy = conn.execute(
                    "SELECT count(*) FROM conversations WHERE workspace_id = ? "
                    f"AND status IN ({', '.join('?' * len(BUSY_STATUSES))})",
                    (workspace_id, *BUSY_STATUSES),
                ).fetchone()[0]
                if busy >= max_active:
                    raise ActiveLimitError(workspace_id, max_active)
            now = now_ms()
            conn.execute(
                "UPDATE conversations SET status = ?, phase = ?, event_seq = ?, body = ?, "
                "updated_at = ? WHERE id = ?",
                (
                    result.fields["conversationStatus"],
                    result.phase.value,
                    current.event_seq + len(result.events),
                    _without_customer(result),
                    now,
                    conversation_id,
                ),
            )
            conn.executemany(
                "INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, "
                "event_type, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.id,
                        workspace_id,
                        conversation_id,
                        current.event_seq + n,
                        e.event_type,
                        e.body,
                        now,
                    )
                    for n, e in enumerate(result.events, 1)
                ],
            )
            return result

        return await self.db.write(write)

    # -- events --------------------------------------------------------------------------

    async def list_events(
        self,
        workspace_id: str,
        *,
        event_type: str | None = None,
        conversation_id: str | None = None,
        created_after: int | None = None,
        created_before: int | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        """The workspace's events in wire form, oldest first."""
        sql = "SELECT seq, body FROM events WHERE workspace_id = ? AND seq > ?"
        args: list[Any] = [workspace_id, decode_cursor(cursor)]
        for column, value in (
            ("event_type = ?", event_type),
            ("conversation_id = ?", conversation_id),
            ("created_at >= ?", created_after),
            ("created_at < ?", created_before),
        ):
            if value is not None:
                sql += f" AND {column}"
                args.append(value)
        return await self._page(sql, args, limit)

    async def get_event(self, workspace_id: str, event_id: str) -> str:
        """The event's exact wire JSON, or :class:`NotFoundError`."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT body FROM events WHERE workspace_id = ? AND id = ?",
                (workspace_id, event_id),
            ).fetchone()
            return None if row is None else str(row["body"])

        body = await self.db.read(read)
        if body is None:
            raise NotFoundError(f"no event {event_id} in this workspace")
        return body

    async def events_after(
        self, seq: int, *, workspace_id: str | None = None, limit: int = 500
    ) -> list[EventRow]:
        """Outbox rows with ``seq`` greater than the one given, oldest first (for tailing)."""

        def read(conn: sqlite3.Connection) -> list[EventRow]:
            sql = (
                "SELECT seq, id, workspace_id, conversation_id, conversation_seq, event_type, "
                "created_at FROM events WHERE seq > ?"
            )
            args: list[Any] = [seq]
            if workspace_id is not None:
                sql += " AND workspace_id = ?"
                args.append(workspace_id)
            rows = conn.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit))
            return [EventRow(*r) for r in rows]

        return await self.db.read(read)

    async def last_event_seq(self) -> int:
        """The sequence number of the newest event, 0 when there is none."""

        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

        return await self.db.read(read)

    # -- helpers -------------------------------------------------------------------------

    async def _page(self, sql: str, args: list[Any], limit: int, *, embed: bool = False) -> Page:
        limit = max(1, min(limit, MAX_LIMIT))

        def read(conn: sqlite3.Connection) -> Page:
            rows = conn.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit + 1)).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            if embed:
                items = [json.dumps(_embed(conn, json.loads(r["body"]))) for r in rows]
            else:
                items = [str(r["body"]) for r in rows]
            cursor = encode_cursor(rows[-1]["seq"]) if more else None
            return Page(items, cursor)

        return await self.db.read(read)


def _without_customer(change: Change) -> str:
    """The conversation row's body: the wire JSON with ``"customer": null``."""
    if change.fields.get("customer") is None:
        return change.json
    return json.dumps({**change.fields, "customer": None}, separators=(",", ":"))


def _update_customer(conn: sqlite3.Connection, doc: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE customers SET identifier = ?, dnd = ?, body = ?, updated_at = ? WHERE id = ?",
        (
            doc.get("identifier"),
            bool(doc.get("isDoNotDisturbEnabled")),
            json.dumps(doc),
            now_ms(),
            doc["id"],
        ),
    )


def _conversation_row(
    conn: sqlite3.Connection, workspace_id: str, conversation_id: str
) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT id, phase, event_seq, body FROM conversations WHERE workspace_id = ? AND id = ?",
        (workspace_id, conversation_id),
    ).fetchone()
    return row


def _embed(conn: sqlite3.Connection, doc: dict[str, Any]) -> dict[str, Any]:
    """The conversation with its customer's current wire dict in place of ``null``."""
    customer_id = doc.get("customerId")
    if customer_id is not None:
        row = conn.execute(
            "SELECT body FROM customers WHERE id = ? AND workspace_id = ?",
            (customer_id, doc["workspaceId"]),
        ).fetchone()
        if row is not None:
            doc["customer"] = json.loads(row["body"])
    return doc


def _reference_problems(
    conn: sqlite3.Connection, workspace_id: str, item: NewConversation, now: int
) -> list[FieldProblem]:
    problems = []
    customer_id = item.fields.get("customerId")
    if customer_id is not None:
        row = conn.execute(
            "SELECT dnd FROM customers WHERE workspace_id = ? AND id = ?",
            (workspace_id, customer_id),
        ).fetchone()
        if row is None:
            problems.append(FieldProblem("customerId", "no such customer in this workspace"))
        elif row["dnd"] and not item.ignore_dnd:
            problems.append(
                FieldProblem(
                    "customerId",
                    "the customer has do-not-disturb enabled: pass ignoreDND=true to override",
                )
            )
    agent_id = item.fields["agentId"]
    owner = conn.execute("SELECT workspace_id FROM agents WHERE id = ?", (agent_id,)).fetchone()
    if owner is not None and owner[0] != workspace_id:
        problems.append(FieldProblem("agentId", "no such agent in this workspace"))
    elif owner is None and not problems:
        conn.execute(
            "INSERT INTO agents (id, workspace_id, created_at) VALUES (?, ?, ?)",
            (agent_id, workspace_id, now),
        )
    return problems
