-- The inbox schema on SQLite as the migrations in this folder leave a fresh
-- database (NNNN_name.sql files only: this file is never run).
-- Generated: do not edit. After changing a migration, regenerate with
--     .venv/bin/python scripts/dump-schema
-- tests/integration/test_schema_files.py fails while this file is out of date.

CREATE TABLE convhook_inbox (
    event_id    TEXT PRIMARY KEY,
    webhook_id  TEXT UNIQUE,
    event_type  TEXT NOT NULL,
    body        BLOB NOT NULL,
    headers     TEXT NOT NULL,
    received_at REAL NOT NULL
, conversation_id TEXT, sequence INTEGER, traceparent TEXT, origin TEXT NOT NULL DEFAULT 'delivery'
    CHECK (origin IN ('delivery', 'reconciled')));

CREATE TABLE convhook_inbox_conversations (
    conversation_id TEXT PRIMARY KEY,
    last_sequence   INTEGER NOT NULL DEFAULT 0,
    last_event_id   TEXT,
    last_rank       INTEGER NOT NULL DEFAULT 0,
    updated_at      REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE convhook_inbox_gaps (
    id              INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('gap', 'out_of_order')),
    after_sequence  INTEGER,
    before_sequence INTEGER,
    status          TEXT NOT NULL CHECK (status IN ('open', 'filled', 'unfilled', 'recorded')),
    reason          TEXT,
    filled          INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    detected_at     REAL NOT NULL,
    resolved_at     REAL
);

CREATE TABLE convhook_inbox_state (
    event_id        TEXT PRIMARY KEY REFERENCES convhook_inbox (event_id) ON DELETE CASCADE,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    handlers_done   TEXT NOT NULL DEFAULT '[]',
    last_error      TEXT,
    updated_at      REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE convhook_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL);

CREATE INDEX convhook_inbox_conversation
    ON convhook_inbox (conversation_id, sequence)
    WHERE conversation_id IS NOT NULL;

CREATE INDEX convhook_inbox_gaps_conversation
    ON convhook_inbox_gaps (conversation_id, after_sequence);

CREATE INDEX convhook_inbox_state_due
    ON convhook_inbox_state (next_attempt_at)
    WHERE status IN ('pending', 'running');

CREATE INDEX convhook_inbox_state_failed
    ON convhook_inbox_state (status)
    WHERE status = 'failed';
