"""Conversations and the outbox write: a conversation's new state and its events commit in
one transaction, guarded by a compare-and-swap on the state the change was computed from."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from convhook import jsontext
from convhook.errors import ActiveLimitError as ActiveLimitError  # re-exported: its old home
from convhook.errors import FieldProblem
from convhook.lifecycle import BUSY_STATUSES, Phase
from convhook.store.engine.connection import Connection
from convhook.store.producer.paging import (
    ItemResult,
    NotFoundError,
    Page,
    RaceLost,
    filters,
    now_ms,
    page,
)


@dataclass(frozen=True)
class StoredConversation:
    """A conversation as a change sees it: its phase, event count and wire fields."""

    id: str
    workspace_id: str
    phase: Phase
    event_seq: int
    fields: dict[str, Any]
    """The wire fields, ``customer`` embedded as it is now."""
    last_event_id: str | None = None
    """The id of its latest event: the next event's ``previous_event_id``."""


@dataclass(frozen=True)
class NewEvent:
    """An event to append to the outbox with the change that caused it."""

    id: str
    event_type: str
    body: str
    """The exact wire JSON ``{eventId, eventType, payload}``."""
    traceparent: str | None = None
    """The W3C trace context of what caused it; every delivery attempt continues it."""


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


_WITH_CUSTOMER = (
    "SELECT c.seq AS seq, c.id AS id, c.phase AS phase, c.event_seq AS event_seq, "
    "c.body AS body, cu.body AS customer FROM conversations c LEFT JOIN customers cu "
    "ON cu.id = c.customer_id AND cu.workspace_id = c.workspace_id WHERE c.workspace_id = ?"
)


# The latest event's id rides with the read a change makes anyway (one indexed lookup), so the
# events it records can name their predecessor.
LAST_EVENT = (
    "(SELECT ev.id FROM events ev WHERE ev.conversation_id = c.id "
    "AND ev.conversation_seq = c.event_seq) AS last_event_id"
)


def embedded(row: Any) -> dict[str, Any]:
    """The wire conversation of a row selected with its customer's body."""
    doc: dict[str, Any] = jsontext.loads(row["body"])
    if row["customer"] is not None:
        doc["customer"] = jsontext.loads(row["customer"])
    return doc


def current(conn: Connection, workspace_id: str, conversation_id: str) -> StoredConversation | None:
    """The conversation as it is now, or None."""
    sql = _WITH_CUSTOMER.replace(" FROM conversations c", f", {LAST_EVENT} FROM conversations c")
    row = conn.execute(sql + " AND c.id = ?", (workspace_id, conversation_id)).fetchone()
    if row is None:
        return None
    return StoredConversation(
        row["id"],
        workspace_id,
        Phase(row["phase"]),
        row["event_seq"],
        embedded(row),
        row["last_event_id"],
    )


def list_page(
    conn: Connection,
    workspace_id: str,
    after: int,
    limit: int,
    given: tuple[tuple[str, Any], ...],
) -> Page:
    """One page of the workspace's conversations (customers embedded) matching ``given``."""
    args: list[Any] = [workspace_id, after]
    columns = tuple((f"c.{condition}", value) for condition, value in given)
    return page(
        conn, filters(_WITH_CUSTOMER + " AND c.seq > ?", args, columns), args, limit, _render
    )


def _render(row: Any) -> str:
    return json.dumps(embedded(row))


def change(
    conn: Connection,
    workspace_id: str,
    conversation_id: str,
    decide: Callable[[StoredConversation], Change],
    max_active: int,
) -> Change:
    """Apply ``decide`` (pure; it may raise to refuse) to the conversation as it is now and
    :func:`commit` the result; :class:`RaceLost` if another process moved it meanwhile."""
    was = current(conn, workspace_id, conversation_id)
    if was is None:
        raise NotFoundError(f"no conversation {conversation_id} in this workspace")
    result = decide(was)
    commit(conn, was, result, max_active=max_active)
    return result


def create(
    conn: Connection, workspace_id: str, items: Sequence[NewConversation]
) -> list[ItemResult]:
    """Insert conversations whose customer and agent belong to this workspace (an agent
    id is claimed by the first workspace that uses it); others become item problems."""
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
        customer_id = doc.get("customerId")
        if customer_id is not None:
            row = conn.execute(
                "SELECT body FROM customers WHERE id = ? AND workspace_id = ?",
                (customer_id, workspace_id),
            ).fetchone()
            doc = {**doc, "customer": json.loads(row["body"])}
        results.append(ItemResult(index, document=doc))
    return results


def commit(conn: Connection, was: StoredConversation, change: Change, *, max_active: int) -> None:
    """Store ``change`` and its events if the conversation is still as ``was``; otherwise
    raise :class:`RaceLost` (another request moved it first) and write nothing."""
    if change.takes_slot:
        busy = conn.execute(
            "SELECT count(*) FROM conversations WHERE workspace_id = ? "
            f"AND status IN ({', '.join('?' * len(BUSY_STATUSES))})",
            (was.workspace_id, *BUSY_STATUSES),
        ).fetchone()[0]
        if busy >= max_active:
            raise ActiveLimitError(was.workspace_id, max_active)
    now = now_ms()
    # Phase and event count together identify a state: phases only move forward and every
    # move that keeps the phase (none today) would add an event.
    updated = conn.execute(
        "UPDATE conversations SET status = ?, phase = ?, event_seq = ?, body = ?, "
        "updated_at = ? WHERE id = ? AND workspace_id = ? AND phase = ? AND event_seq = ?",
        (
            change.fields["conversationStatus"],
            change.phase.value,
            was.event_seq + len(change.events),
            without_customer(change),
            now,
            was.id,
            was.workspace_id,
            was.phase.value,
            was.event_seq,
        ),
    )
    if updated.rowcount != 1:
        raise RaceLost
    if not change.events:
        return
    rows = []
    previous = was.last_event_id
    for n, e in enumerate(change.events, 1):
        rows.append(
            (
                e.id,
                was.workspace_id,
                was.id,
                was.event_seq + n,
                e.event_type,
                e.body,
                now,
                previous,
                e.traceparent,
            )
        )
        previous = e.id
    conn.executemany(INSERT_EVENT, rows)


INSERT_EVENT = (
    "INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, event_type, "
    "body, created_at, previous_event_id, traceparent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def without_customer(change: Change) -> str:
    """The conversation row's body: the wire JSON with ``"customer": null``."""
    if change.fields.get("customer") is None:
        return change.json
    return jsontext.dumps({**change.fields, "customer": None})


def _reference_problems(
    conn: Connection, workspace_id: str, item: NewConversation, now: int
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
    if problems:
        owner = conn.execute("SELECT workspace_id FROM agents WHERE id = ?", (agent_id,)).fetchone()
        if owner is not None and owner[0] != workspace_id:
            problems.append(FieldProblem("agentId", "no such agent in this workspace"))
        return problems
    # Insert if new, then read the owner: another process may claim the agent at the same
    # time, and whoever committed first owns it.
    conn.execute(
        "INSERT INTO agents (id, workspace_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (agent_id, workspace_id, now),
    )
    owner = conn.execute("SELECT workspace_id FROM agents WHERE id = ?", (agent_id,)).fetchone()
    if owner[0] != workspace_id:
        problems.append(FieldProblem("agentId", "no such agent in this workspace"))
    return problems
