"""The producer store: workspaces, API keys, customers, conversations and the event outbox.

:class:`ProducerStore` is the async facade the API, the CLI and the outbox use, over either
engine (a :class:`~convhook.store.engine.database.Database`); the SQL lives in the modules it calls
(:mod:`.workspaces`, :mod:`.customers`, :mod:`.conversations`, :mod:`.event_log`,
:mod:`.retention`), written once for SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from convhook.errors import ConfigError, StoreError
from convhook.store.engine.batcher import Batcher
from convhook.store.engine.database import Database
from convhook.store.engine.resource import Facade
from convhook.store.engine.url import DatabaseURL
from convhook.store.producer import (
    changes,
    conversations,
    customers,
    event_log,
    retention,
    workspaces,
)
from convhook.store.producer.conversations import (
    ActiveLimitError,
    Change,
    NewConversation,
    NewEvent,
    StoredConversation,
)
from convhook.store.producer.customers import NewCustomer
from convhook.store.producer.event_log import EventRow, GoneError
from convhook.store.producer.paging import (
    MAX_LIMIT,
    ConflictError,
    ItemResult,
    NotFoundError,
    Page,
    RaceLost,
    decode_cursor,
    encode_cursor,
    now_ms,
)
from convhook.store.producer.retention import PruneResult
from convhook.store.producer.workspaces import ApiKey, Workspace, hash_key

__all__ = [
    "MAX_LIMIT",
    "ActiveLimitError",
    "ApiKey",
    "Change",
    "ConflictError",
    "EventRow",
    "GoneError",
    "ItemResult",
    "NewConversation",
    "NewCustomer",
    "NewEvent",
    "NotFoundError",
    "Page",
    "ProducerStore",
    "PruneResult",
    "StoredConversation",
    "Workspace",
    "decode_cursor",
    "encode_cursor",
    "hash_key",
    "now_ms",
]

T = TypeVar("T")

# Each lost race means another request moved the conversation on; a conversation has only a
# handful of states, so this bound is reached only by a bug.
_MAX_TRIES = 20


class ProducerStore(Facade):
    """The producer's data in one database; use as ``async with ProducerStore(db)``."""

    def __init__(self, db: Database) -> None:
        if getattr(db, "writer", "thread") != "thread":
            # A transition's write carries the lifecycle's decision (a function) and raises
            # the API's own errors: both stay in this process.
            raise ConfigError(
                "the producer store writes on a writer thread: open its SQLite database "
                "with writer='thread' (the default)"
            )
        super().__init__(db)
        self._transitions = Batcher(db, changes.change_batch)

    @classmethod
    def at(
        cls, url: str | DatabaseURL, *, synchronous: str = "FULL", auto_upgrade: bool = False
    ) -> ProducerStore:
        """The store at a SQLite path or a ``postgresql://`` URL (not yet opened)."""
        from convhook.store import open_database

        return cls(
            open_database(url, "producer", synchronous=synchronous, auto_upgrade=auto_upgrade)
        )

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgres``."""
        return self.db.dialect.name

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        for _ in range(_MAX_TRIES):
            try:
                return await attempt()
            except RaceLost:
                continue
        raise StoreError("the write kept conflicting with concurrent writes: retry the request")

    # -- workspaces and keys -------------------------------------------------------------

    async def create_workspace(self, name: str) -> tuple[Workspace, str]:
        """Create a workspace and its first API key (named ``default``); the key is returned
        here and never again."""
        workspace, record, key = workspaces.new_workspace(name)
        await self.db.write(workspaces.insert, workspace, record, key)
        return workspace, key

    async def list_workspaces(self) -> list[Workspace]:
        """Every workspace, oldest first."""
        return await self.db.read(workspaces.all_)

    async def create_key(self, workspace_id: str, name: str) -> tuple[ApiKey, str]:
        """Add a named key to a workspace (its other keys keep working); the key is returned
        here and never again. :class:`NotFoundError` when there is no such workspace."""
        record, key = workspaces.new_key(workspace_id, name)
        if not await self.db.write(workspaces.insert_key, record, key):
            raise NotFoundError(f"no workspace {workspace_id}")
        return record, key

    async def list_keys(self, workspace_id: str) -> list[ApiKey]:
        """The workspace's keys, revoked ones too, oldest first (:class:`NotFoundError` when
        there is no such workspace)."""
        found = await self.db.read(workspaces.keys_of, workspace_id)
        if found is None:
            raise NotFoundError(f"no workspace {workspace_id}")
        return found

    async def revoke_key(self, workspace_id: str, key_id: str, *, keep_one: bool = False) -> ApiKey:
        """Revoke one of the workspace's keys (again: changes nothing) and return it;
        :class:`NotFoundError` when it has no such key. With ``keep_one``, revoking its last
        active key raises :class:`ConflictError`."""
        found = await self.db.write(workspaces.revoke, workspace_id, key_id, now_ms(), keep_one)
        if found is None:
            raise NotFoundError(f"no key {key_id} in this workspace")
        return found

    async def key_for_hash(self, key_hash: str) -> tuple[Workspace, ApiKey, str] | None:
        """The workspace and key record of a key digest, with the stored digest (for a
        constant-time comparison by the caller), or None. Revoked keys are returned too."""
        return await self.db.read(workspaces.for_key, key_hash)

    async def record_key_use(self, uses: Sequence[tuple[str, int]]) -> None:
        """Note when keys were last used: ``(key id, epoch ms)`` pairs, in one write."""
        await self.db.write(workspaces.record_use, uses)

    # -- customers -----------------------------------------------------------------------

    async def save_customers(
        self, workspace_id: str, items: Sequence[NewCustomer], *, upsert: bool
    ) -> list[ItemResult]:
        """Insert customers; with ``upsert`` an item whose identifier exists updates that
        customer with the item's given fields instead. Duplicates are item problems."""
        return await self._retrying(
            lambda: self.db.write(customers.save, workspace_id, items, upsert)
        )

    async def get_customer(self, workspace_id: str, customer_id: str) -> dict[str, Any]:
        """The customer's wire dict, or :class:`NotFoundError`."""
        found = await self.db.read(customers.body, workspace_id, customer_id)
        if found is None:
            raise NotFoundError(f"no customer {customer_id} in this workspace")
        doc: dict[str, Any] = json.loads(found)
        return doc

    async def update_customer(
        self, workspace_id: str, customer_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply wire-field ``changes`` to a customer and return it; duplicate identifiers
        raise :class:`ConflictError`."""
        doc = await self.db.write(customers.update, workspace_id, customer_id, changes)
        if doc is None:
            raise NotFoundError(f"no customer {customer_id} in this workspace")
        return doc

    async def list_customers(
        self, workspace_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """The workspace's customers, oldest first."""
        return await self.db.read(customers.list_page, workspace_id, decode_cursor(cursor), limit)

    # -- conversations -------------------------------------------------------------------

    async def create_conversations(
        self, workspace_id: str, items: Sequence[NewConversation]
    ) -> list[ItemResult]:
        """Insert conversations whose customer and agent belong to this workspace (an agent
        id is claimed by the first workspace that uses it); others become item problems."""
        return await self.db.write(conversations.create, workspace_id, items)

    async def get_conversation(self, workspace_id: str, conversation_id: str) -> dict[str, Any]:
        """The conversation's wire dict with its customer embedded, or :class:`NotFoundError`."""
        found = await self.db.read(conversations.current, workspace_id, conversation_id)
        if found is None:
            raise NotFoundError(f"no conversation {conversation_id} in this workspace")
        return found.fields

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
        return await self.db.read(
            conversations.list_page,
            workspace_id,
            decode_cursor(cursor),
            limit,
            (
                ("status = ?", status),
                ("agent_id = ?", agent_id),
                ("customer_id = ?", customer_id),
                ("campaign_id = ?", campaign_id),
                ("created_at >= ?", created_after),
                ("created_at < ?", created_before),
            ),
        )

    async def change_conversation(
        self,
        workspace_id: str,
        conversation_id: str,
        change: Callable[[StoredConversation], Change],
        *,
        max_active: int,
    ) -> Change:
        """Apply ``change`` (pure; it may raise to refuse) to the conversation as it is inside
        the write and store the new row and its events in the same transaction. Concurrent
        transitions share one write (:mod:`.changes`); should another process have moved the
        conversation in between, the transition is retried from a fresh read."""
        # The read and the change run inside the write: measured in bench/api.py, a separate
        # read on a reader thread cost more (one more thread hop per request) than it saved
        # the writer.
        request = changes.Transition(workspace_id, conversation_id, change, max_active)

        async def attempt() -> Change:
            outcome = await self._transitions.submit(request)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        return await self._retrying(attempt)

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
        """The workspace's events in wire form, oldest first (pruned ones as stubs)."""
        after = decode_cursor(cursor)
        given = (
            ("event_type = ?", event_type),
            ("conversation_id = ?", conversation_id),
            ("created_at >= ?", created_after),
            ("created_at < ?", created_before),
        )
        return await self.db.read(event_log.list_page, workspace_id, after, limit, given)

    async def get_event(self, workspace_id: str, event_id: str) -> str:
        """The event's exact wire JSON; :class:`NotFoundError`, or :class:`GoneError` when
        its payload was pruned."""
        found = await self.db.read(event_log.body, workspace_id, event_id)
        if found is None:
            raise NotFoundError(f"no event {event_id} in this workspace")
        return found

    async def conversation_events(
        self, workspace_id: str, conversation_id: str, *, after_sequence: int, limit: int
    ) -> tuple[list[str], int | None]:
        """A conversation's events after ``after_sequence``, in order, each as the API lists
        it, and the sequence the next page starts after (None at the end);
        :class:`NotFoundError` when the workspace has no such conversation."""
        found = await self.db.read(
            event_log.of_conversation, workspace_id, conversation_id, after_sequence, limit
        )
        if found is None:
            raise NotFoundError(f"no conversation {conversation_id} in this workspace")
        return found

    async def events_after(
        self, seq: int, *, workspace_id: str | None = None, limit: int = 500
    ) -> list[EventRow]:
        """Outbox rows with ``seq`` greater than the one given, oldest first (for tailing)."""
        return await self.db.read(event_log.after, seq, workspace_id, limit)

    async def last_event_seq(self) -> int:
        """The sequence number of the newest event, 0 when there is none."""
        return await self.db.read(event_log.last_seq)

    async def prune_events(
        self,
        *,
        older_than_ms: int,
        batch: int = retention.DEFAULT_BATCH,
        clock: Callable[[], float] | None = None,
    ) -> PruneResult:
        """Remove the payload of events older than ``older_than_ms`` whose deliveries are
        all finished, ``batch`` per transaction (see :mod:`convhook.store.producer.retention`)."""
        if clock is None:
            return await retention.prune(self.db, older_than_ms=older_than_ms, batch=batch)
        return await retention.prune(self.db, older_than_ms=older_than_ms, batch=batch, clock=clock)
