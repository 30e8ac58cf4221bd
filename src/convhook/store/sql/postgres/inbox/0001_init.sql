-- The receiver's inbox on PostgreSQL: the twin of sqlite/inbox/0001_init.sql (same tables,
-- columns, indexes and constraints), so the store's SQL is the same on both engines. Times
-- are epoch seconds as DOUBLE PRECISION, exactly SQLite's REAL: the inbox API speaks float
-- seconds and a retry time must read back as the value written. Bodies are BYTEA (byte-exact);
-- seq gives the arrival order SQLite's rowid gives.
CREATE TABLE IF NOT EXISTS convhook_inbox (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    event_id    TEXT PRIMARY KEY,
    webhook_id  TEXT UNIQUE,
    event_type  TEXT NOT NULL,
    body        BYTEA NOT NULL,
    headers     TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE IF NOT EXISTS convhook_inbox_state (
    event_id        TEXT PRIMARY KEY REFERENCES convhook_inbox (event_id) ON DELETE CASCADE,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION,
    handlers_done   TEXT NOT NULL DEFAULT '[]',
    last_error      TEXT,
    updated_at      DOUBLE PRECISION NOT NULL
);

-- Only work still to do is indexed, so the index stays small however long the history.
CREATE INDEX IF NOT EXISTS convhook_inbox_state_due
    ON convhook_inbox_state (next_attempt_at)
    WHERE status IN ('pending', 'running');

CREATE INDEX IF NOT EXISTS convhook_inbox_state_failed
    ON convhook_inbox_state (status)
    WHERE status = 'failed';
