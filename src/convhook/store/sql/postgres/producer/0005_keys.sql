-- Several named keys per workspace, so a key can be rotated without downtime, each with its
-- last use and its revocation. Every existing key becomes the key "default" of its workspace
-- and keeps working; its id is made here, in the form of convhook.ids.new_id.
ALTER TABLE api_keys
    ADD COLUMN id TEXT,
    ADD COLUMN name TEXT NOT NULL DEFAULT 'default',
    ADD COLUMN last_used_at BIGINT, -- epoch ms, recorded at most once a minute per key and process
    ADD COLUMN revoked_at BIGINT; -- epoch ms; a revoked key authenticates nothing

UPDATE api_keys
SET id = 'key_' || lpad(to_hex(created_at), 12, '0') || substr(md5(random()::text || key_hash), 1, 16);

ALTER TABLE api_keys
    ALTER COLUMN id SET NOT NULL,
    ALTER COLUMN name DROP DEFAULT,
    DROP CONSTRAINT api_keys_pkey,
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY (id),
    ADD CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash);

CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at, id);
