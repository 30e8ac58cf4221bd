-- The producer's tables on PostgreSQL: the twin of sqlite/producer/0001_init.sql (same
-- tables, columns, indexes and constraints). Times are epoch milliseconds (BIGINT), flags are
-- INTEGER 0/1 and JSON is TEXT, so the store's SQL is the same on both engines.

CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Keys are stored as sha256 hex digests; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    key_hash TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- There is no agents resource: an agent id belongs to the first workspace that uses it.
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE customers (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    identifier TEXT,
    dnd INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL, -- the customer's wire JSON
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (workspace_id, identifier)
);

CREATE INDEX customers_workspace ON customers (workspace_id, seq);

CREATE TABLE conversations (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    agent_id TEXT NOT NULL,
    customer_id TEXT,
    campaign_id TEXT,
    status TEXT NOT NULL,
    phase TEXT NOT NULL,
    event_seq INTEGER NOT NULL DEFAULT 0, -- conversation_seq of its latest event
    body TEXT NOT NULL, -- the conversation's wire JSON with "customer": null
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX conversations_workspace ON conversations (workspace_id, seq);
CREATE INDEX conversations_status ON conversations (workspace_id, status, seq);
CREATE INDEX conversations_agent ON conversations (workspace_id, agent_id, seq);
CREATE INDEX conversations_customer ON conversations (workspace_id, customer_id, seq);
CREATE INDEX conversations_campaign ON conversations (workspace_id, campaign_id, seq);
CREATE INDEX conversations_created ON conversations (workspace_id, created_at);

-- The outbox: one row per event, written in the same transaction as the change it reports.
-- The retention job empties body ('') of old, fully delivered events and keeps the row.
CREATE TABLE events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    conversation_seq INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL, -- the exact wire JSON {eventId, eventType, payload}
    created_at BIGINT NOT NULL, -- epoch ms
    -- Also the "events of a conversation" index (SQLite has it as a separate index of the
    -- same name; here the constraint's own index serves, so it is not built twice).
    CONSTRAINT events_conversation UNIQUE (conversation_id, conversation_seq)
);

CREATE INDEX events_workspace ON events (workspace_id, seq);
CREATE INDEX events_type ON events (workspace_id, event_type, seq);
