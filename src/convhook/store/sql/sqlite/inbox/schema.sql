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

CREATE INDEX convhook_inbox_state_due
    ON convhook_inbox_state (next_attempt_at)
    WHERE status IN ('pending', 'running');

CREATE INDEX convhook_inbox_state_failed
    ON convhook_inbox_state (status)
    WHERE status = 'failed';
