"""Customers: inserted, merged by identifier (upsert), read and updated as wire JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from convhook.errors import FieldProblem
from convhook.store.engine.connection import Connection
from convhook.store.producer.paging import ConflictError, ItemResult, Page, RaceLost, now_ms, page


@dataclass(frozen=True)
class NewCustomer:
    """A customer to insert (``document``, complete) or to merge by identifier (``given``)."""

    document: dict[str, Any]
    given: dict[str, Any]
    """The wire fields the request set, plus ``updatedAt``."""


def save(
    conn: Connection, workspace_id: str, items: Sequence[NewCustomer], upsert: bool
) -> list[ItemResult]:
    """Insert customers; with ``upsert`` an existing identifier is merged with the item's
    given fields instead. Raises :class:`RaceLost` when another process inserted the same
    identifier meanwhile (the caller retries: the identifier then exists)."""
    results = []
    for index, new in enumerate(items):
        item = new.document
        existing = None
        if item.get("identifier") is not None:
            existing = conn.execute(
                "SELECT id, body FROM customers WHERE workspace_id = ? AND identifier = ?",
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
            _write(conn, doc)
        else:
            doc = item
            try:
                conn.execute(
                    "INSERT INTO customers "
                    "(id, workspace_id, identifier, dnd, body, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        doc["id"],
                        workspace_id,
                        doc.get("identifier"),
                        int(bool(doc.get("isDoNotDisturbEnabled"))),
                        json.dumps(doc),
                        now_ms(),
                        now_ms(),
                    ),
                )
            except conn.dialect.integrity_error:
                raise RaceLost from None
        results.append(ItemResult(index, document=doc))
    return results


def list_page(conn: Connection, workspace_id: str, after: int, limit: int) -> Page:
    """One page of the workspace's customers, oldest first."""
    sql = "SELECT seq, body FROM customers WHERE workspace_id = ? AND seq > ?"
    return page(conn, sql, [workspace_id, after], limit, _body)


def _body(row: Any) -> str:
    return str(row["body"])


def body(conn: Connection, workspace_id: str, customer_id: str) -> str | None:
    """The customer's wire JSON, or None."""
    row = conn.execute(
        "SELECT body FROM customers WHERE workspace_id = ? AND id = ?",
        (workspace_id, customer_id),
    ).fetchone()
    return None if row is None else str(row["body"])


def update(
    conn: Connection, workspace_id: str, customer_id: str, changes: dict[str, Any]
) -> dict[str, Any] | None:
    """Apply wire-field ``changes``; None when there is no such customer. A duplicate
    identifier raises :class:`ConflictError`."""
    found = body(conn, workspace_id, customer_id)
    if found is None:
        return None
    doc = {**json.loads(found), **changes}
    try:
        _write(conn, doc)
    except conn.dialect.integrity_error:
        raise ConflictError(
            f"another customer has identifier {doc.get('identifier')!r}",
            [FieldProblem("identifier", "already used by another customer")],
        ) from None
    return doc


def _write(conn: Connection, doc: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE customers SET identifier = ?, dnd = ?, body = ?, updated_at = ? WHERE id = ?",
        (
            doc.get("identifier"),
            int(bool(doc.get("isDoNotDisturbEnabled"))),
            json.dumps(doc),
            now_ms(),
            doc["id"],
        ),
    )
