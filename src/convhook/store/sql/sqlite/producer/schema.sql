-- The producer schema on SQLite as the migrations in this folder leave a fresh
-- database (NNNN_name.sql files only: this file is never run).
-- Generated: do not edit. After changing a migration, regenerate with
--     .venv/bin/python scripts/dump-schema
-- tests/integration/test_schema_files.py fails while this file is out of date.

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    created_at INTEGER NOT NULL
);

CREATE TABLE "api_keys" (
    id TEXT PRIMARY KEY, -- key_...
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE, -- sha256 hex digest; the key itself is shown once
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER, -- epoch ms, recorded at most once a minute per key and API process
    revoked_at INTEGER -- epoch ms; a revoked key authenticates nothing
);

CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempted_at INTEGER NOT NULL,
    status_code INTEGER,
    latency_ms REAL NOT NULL,
    error TEXT,
    response_body TEXT NOT NULL DEFAULT ''  -- first 4 KiB
);

CREATE TABLE conversations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    agent_id TEXT NOT NULL,
    customer_id TEXT,
    campaign_id TEXT,
    status TEXT NOT NULL,
    phase TEXT NOT NULL,
    event_seq INTEGER NOT NULL DEFAULT 0, -- conversation_seq of its latest event
    body TEXT NOT NULL, -- the conversation's wire JSON with "customer": null
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE convhook_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL);

CREATE TABLE customers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    identifier TEXT,
    dnd INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL, -- the customer's wire JSON
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (workspace_id, identifier)
);

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
, event_seq INTEGER NOT NULL DEFAULT 0);

CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    conversation_seq INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL, -- the exact wire JSON {eventId, eventType, payload}
    created_at INTEGER NOT NULL, previous_event_id TEXT, traceparent TEXT, -- epoch ms
    UNIQUE (conversation_id, conversation_seq)
);

CREATE TABLE leader_leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at, id);

CREATE INDEX attempts_by_delivery ON attempts (delivery_id, id);

CREATE INDEX conversations_agent ON conversations (workspace_id, agent_id, seq);

CREATE INDEX conversations_campaign ON conversations (workspace_id, campaign_id, seq);

CREATE INDEX conversations_created ON conversations (workspace_id, created_at);

CREATE INDEX conversations_customer ON conversations (workspace_id, customer_id, seq);

CREATE INDEX conversations_stale ON conversations (phase, updated_at, id)
    WHERE phase IN ('created', 'dialing', 'active', 'left');

CREATE INDEX conversations_status ON conversations (workspace_id, status, seq);

CREATE INDEX conversations_workspace ON conversations (workspace_id, seq);

CREATE INDEX customers_workspace ON customers (workspace_id, seq);

CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, id);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE status = 'pending';

CREATE INDEX deliveries_failed ON deliveries (endpoint_id, created_at) WHERE status = 'failed';

CREATE INDEX deliveries_failed_by_endpoint ON deliveries (endpoint_id, id)
    WHERE status = 'failed';

CREATE INDEX deliveries_first_due ON deliveries (next_attempt_at, id)
    WHERE status = 'pending' AND attempts = 0;

CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE status = 'delivering';

CREATE INDEX deliveries_order ON deliveries (endpoint_id, conversation_id, conversation_seq)
    WHERE status IN ('pending', 'delivering');

CREATE INDEX deliveries_retries_due ON deliveries (next_attempt_at, id)
    WHERE status = 'pending' AND attempts > 0;

CREATE INDEX deliveries_waiting_by_endpoint ON deliveries (endpoint_id, status, id)
    WHERE status IN ('pending', 'delivering');

CREATE INDEX endpoints_by_workspace ON endpoints (workspace_id, created_at, id);

CREATE INDEX events_conversation ON events (conversation_id, conversation_seq);

CREATE INDEX events_of_conversation ON events (conversation_id, workspace_id, seq);

CREATE INDEX events_type ON events (workspace_id, event_type, seq);

CREATE INDEX events_workspace ON events (workspace_id, seq);

CREATE TRIGGER events_fan_out AFTER INSERT ON events
BEGIN
    INSERT INTO deliveries (event_seq, event_id, endpoint_id, workspace_id, conversation_id, conversation_seq, event_type, next_attempt_at, created_at, updated_at) SELECT NEW.seq, NEW.id, e.id, NEW.workspace_id, NEW.conversation_id, NEW.conversation_seq, NEW.event_type, NEW.created_at, NEW.created_at, NEW.created_at FROM endpoints AS e WHERE e.workspace_id = NEW.workspace_id AND e.enabled = 1 AND ((e.event_types IS NULL AND NEW.event_type LIKE 'conversation.%') OR EXISTS (SELECT 1 FROM json_each(e.event_types) WHERE json_each.value = NEW.event_type)); END;
