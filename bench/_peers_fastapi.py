"""The receiver a FastAPI user would write instead of ``convhook listen`` (bench/peers.py).

``POST /webhook``: read the raw body, verify it with ``standardwebhooks``, validate the
envelope with a pydantic model, insert it into SQLite (WAL, ``synchronous=FULL``, the event id
unique so a redelivery is ignored) and commit before answering 200.

The route is ``async`` because the signature covers the raw body, which only an async route
can read as it came (the pattern of standardwebhooks' own FastAPI example). The write is
blocking sqlite3, run with ``run_in_threadpool`` as FastAPI's docs advise for a blocking
driver, on one connection shared under a lock. A connection per threadpool thread (what a
connection pool gives) was slower here: its threads wait on SQLite's write lock in the busy
handler's sleeps (p99 above a second at 64 connections against ~150 ms). aiosqlite was not
chosen: it too runs every call on a thread, with one more hop per statement.

Run by uvicorn with ``PEERS_SECRET`` (a whsec_ secret) and ``PEERS_DB`` (a SQLite path).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ValidationError
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.concurrency import run_in_threadpool

SECRET = os.environ["PEERS_SECRET"]
DB = os.environ["PEERS_DB"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_events (
    event_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at REAL NOT NULL
)
"""


class Envelope(BaseModel):
    """The fields of a conversation event every handler relies on."""

    eventId: str
    eventType: str
    payload: dict[str, Any]


# One writer at a time: SQLite has one write lock, and a Python lock queues the waiting
# threads without the busy handler's sleeps.
_lock = threading.Lock()


def save(conn: sqlite3.Connection, event: Envelope, body: str) -> None:
    """Insert the event (ignored if its id is stored already) and commit."""
    with _lock, conn:
        conn.execute(
            "INSERT OR IGNORE INTO webhook_events (event_id, event_type, body, received_at) "
            "VALUES (?, ?, ?, ?)",
            (event.eventId, event.eventType, body, time.time()),
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    conn = sqlite3.connect(DB, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(SCHEMA)
    app.state.db = conn
    yield
    conn.close()


app = FastAPI(lifespan=lifespan)
webhook = Webhook(SECRET)


@app.post("/webhook", response_class=PlainTextResponse)
async def receive(request: Request) -> str:
    body = (await request.body()).decode()
    try:
        webhook.verify(body, dict(request.headers), json_parse=False)
    except WebhookVerificationError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    try:
        event = Envelope.model_validate_json(body)
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=exc.errors()) from exc
    await run_in_threadpool(save, request.app.state.db, event, body)
    return "Webhook received successfully"
