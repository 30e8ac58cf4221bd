-- Indexes measured with bench/indexes.py at 10 M deliveries against 100 k. Only
-- indexes are added, no table is rewritten. Migrations run in a transaction, so this is a
-- plain CREATE INDEX (not CONCURRENTLY): writes to deliveries wait while it builds (it reads
-- the table once; only failed rows go into it).

-- "Deliveries of an endpoint" with status=failed, newest first. Failed deliveries are kept
-- for good, so without it the listing reads and sorts all of an endpoint's failed history.
-- Only failed rows are indexed: no claim statement can pick it (an index leading with
-- endpoint_id over pending rows would compete with deliveries_order in the claim's order
-- check, and with stale statistics PostgreSQL chose it, reading the backlog once per row).
CREATE INDEX IF NOT EXISTS deliveries_failed_by_endpoint ON deliveries (endpoint_id, id)
    WHERE status = 'failed';

-- PostgreSQL needs no index for "events of a conversation": with table statistics it reads
-- the events_conversation constraint's index (SQLite, which has none, gets one in its twin).
