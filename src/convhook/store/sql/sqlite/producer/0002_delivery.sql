-- Delivery side of the producer: endpoints, one delivery per (event, endpoint), every attempt.
-- Times are epoch milliseconds. Fan-out is a trigger on events so that an event and its
-- deliveries commit in the same transaction, whoever inserts the event.

CREATE TABLE endpoints (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    event_types TEXT,                       -- JSON array of event types; NULL means all
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    secret TEXT NOT NULL,                   -- whsec_...; needed in clear to sign
    previous_secret TEXT,                   -- still signs until previous_secret_expires_at
    previous_secret_expires_at INTEGER,
    rate_limit REAL,                        -- deliveries per second; NULL means unlimited
    max_in_flight INTEGER NOT NULL DEFAULT 10,
    failing_since INTEGER,                  -- first failure since the last success
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE INDEX endpoints_by_workspace ON endpoints (workspace_id, created_at, id);

CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq INTEGER,                      -- NULL for a test event, whose body is inline
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    conversation_seq INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT,                              -- only for test events; otherwise events.body
    status TEXT NOT NULL DEFAULT 'pending', -- pending | delivering | delivered | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    last_status_code INTEGER,
    last_error TEXT,
    last_attempt_at INTEGER,
    delivered_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (event_id, endpoint_id)
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE status = 'pending';

CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE status = 'delivering';

CREATE INDEX deliveries_order ON deliveries (endpoint_id, conversation_id, conversation_seq)
    WHERE status IN ('pending', 'delivering');

CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, id);

CREATE INDEX deliveries_failed ON deliveries (endpoint_id, created_at) WHERE status = 'failed';

CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempted_at INTEGER NOT NULL,
    status_code INTEGER,
    latency_ms REAL NOT NULL,
    error TEXT,
    response_body TEXT NOT NULL DEFAULT ''  -- first 4 KiB
);

CREATE INDEX attempts_by_delivery ON attempts (delivery_id, id);

CREATE TRIGGER events_fan_out AFTER INSERT ON events
BEGIN
    INSERT INTO deliveries (event_seq, event_id, endpoint_id, workspace_id, conversation_id, conversation_seq, event_type, next_attempt_at, created_at, updated_at) SELECT NEW.seq, NEW.id, e.id, NEW.workspace_id, NEW.conversation_id, NEW.conversation_seq, NEW.event_type, NEW.created_at, NEW.created_at, NEW.created_at FROM endpoints AS e WHERE e.workspace_id = NEW.workspace_id AND e.enabled = 1 AND (e.event_types IS NULL OR EXISTS (SELECT 1 FROM json_each(e.event_types) WHERE json_each.value = NEW.event_type)); END;
