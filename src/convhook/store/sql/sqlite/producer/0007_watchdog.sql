-- The watchdog ends a conversation that stays too long in a phase that is not final: it looks
-- for the oldest last change (updated_at, epoch ms) of each phase watched, in (updated_at, id)
-- order. Final phases (ended, failed, analysed) hold nearly every row and are left out. SQLite
-- uses a partial index only when the query repeats its WHERE term: the watchdog's query does.
CREATE INDEX IF NOT EXISTS conversations_stale ON conversations (phase, updated_at, id)
    WHERE phase IN ('created', 'dialing', 'active', 'left');

-- One named lease per job that a single process may run at a time (the watchdog): taken and
-- renewed in a write by its owner while it runs, taken over by another once expires_at (epoch
-- ms) has passed, so a crashed holder is replaced after one lease period.
CREATE TABLE leader_leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
