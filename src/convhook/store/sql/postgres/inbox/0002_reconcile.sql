-- The twin of sqlite/inbox/0002_reconcile.sql on PostgreSQL (times as DOUBLE PRECISION).
-- Each conversation's events are handled in order. An event records the conversation it
-- belongs to (conversation.* events only), its position there (the convhook-sequence header),
-- the W3C traceparent it was delivered with (valid ones only), and whether it was delivered
-- or fetched from the producer's API to fill a gap. Rows stored before this version have
-- none of these and take no part in ordering.
ALTER TABLE convhook_inbox ADD COLUMN conversation_id TEXT;

ALTER TABLE convhook_inbox ADD COLUMN sequence INTEGER;

ALTER TABLE convhook_inbox ADD COLUMN traceparent TEXT;

ALTER TABLE convhook_inbox ADD COLUMN origin TEXT NOT NULL DEFAULT 'delivery'
    CHECK (origin IN ('delivery', 'reconciled'));

-- Looks for a conversation's earlier events: only rows with a conversation are indexed.
CREATE INDEX IF NOT EXISTS convhook_inbox_conversation
    ON convhook_inbox (conversation_id, sequence)
    WHERE conversation_id IS NOT NULL;

-- The last event handled per conversation: its sequence (0: none with a sequence yet) and the
-- lifecycle rank of the latest type handled (the order for senders without sequences).
CREATE TABLE IF NOT EXISTS convhook_inbox_conversations (
    conversation_id TEXT PRIMARY KEY,
    last_sequence   INTEGER NOT NULL DEFAULT 0,
    last_event_id   TEXT,
    last_rank       INTEGER NOT NULL DEFAULT 0,
    updated_at      DOUBLE PRECISION NOT NULL
);

-- What the ordering found, one row per event that revealed it: a gap (sequences after
-- after_sequence and before before_sequence never arrived) or an event handled out of order
-- (it arrived after a later one had been handled). A gap is open while the event waits for it,
-- then filled or unfilled (with the reason); an out-of-order event is recorded.
CREATE TABLE IF NOT EXISTS convhook_inbox_gaps (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('gap', 'out_of_order')),
    after_sequence  INTEGER,
    before_sequence INTEGER,
    status          TEXT NOT NULL CHECK (status IN ('open', 'filled', 'unfilled', 'recorded')),
    reason          TEXT,
    filled          INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    detected_at     DOUBLE PRECISION NOT NULL,
    resolved_at     DOUBLE PRECISION
);

CREATE INDEX IF NOT EXISTS convhook_inbox_gaps_conversation
    ON convhook_inbox_gaps (conversation_id, after_sequence);
