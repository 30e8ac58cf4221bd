-- The receiver's inbox. Received events are immutable and stored byte-exact; their handler
-- outcome changes several times, so it lives in a narrow table of its own: an update then
-- rewrites a few dozen bytes instead of the page holding a multi-kilobyte body.
CREATE TABLE IF NOT EXISTS convhook_inbox (
    event_id    TEXT PRIMARY KEY,
    webhook_id  TEXT UNIQUE,
    event_type  TEXT NOT NULL,
    body        BLOB NOT NULL,
    headers     TEXT NOT NULL,
    received_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS convhook_inbox_state (
    event_id        TEXT PRIMARY KEY REFERENCES convhook_inbox (event_id) ON DELETE CASCADE,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    handlers_done   TEXT NOT NULL DEFAULT '[]',
    last_error      TEXT,
    updated_at      REAL NOT NULL
) WITHOUT ROWID;

-- Only work still to do is indexed, so the index stays small however long the history.
CREATE INDEX IF NOT EXISTS convhook_inbox_state_due
    ON convhook_inbox_state (next_attempt_at)
    WHERE status IN ('pending', 'running');

-- Failures are rare, so this index costs nothing on the hot path. Listings go newest first
-- by rowid (arrival order), which needs no index at all.
CREATE INDEX IF NOT EXISTS convhook_inbox_state_failed
    ON convhook_inbox_state (status)
    WHERE status = 'failed';
