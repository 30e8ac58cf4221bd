-- Several named keys per workspace, so a key can be rotated without downtime, each with its
-- last use and its revocation. Every existing key becomes the key "default" of its workspace
-- and keeps working. SQLite cannot change a table's primary key in place: it is rebuilt
-- (nothing references api_keys).
CREATE TABLE api_keys_new (
    id TEXT PRIMARY KEY, -- key_...
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE, -- sha256 hex digest; the key itself is shown once
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER, -- epoch ms, recorded at most once a minute per key and API process
    revoked_at INTEGER -- epoch ms; a revoked key authenticates nothing
);

INSERT INTO api_keys_new (id, workspace_id, name, key_hash, prefix, created_at)
SELECT 'key_' || printf('%012x', created_at) || lower(hex(randomblob(8))),
       workspace_id, 'default', key_hash, prefix, created_at
FROM api_keys;

DROP TABLE api_keys;

ALTER TABLE api_keys_new RENAME TO api_keys;

CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at, id);
