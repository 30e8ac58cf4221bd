-- Indexes measured with bench/indexes.py at 10 M deliveries against 100 k. Only
-- indexes are added, no table is rewritten.

-- "Deliveries of an endpoint" with status=failed, newest first. Failed deliveries are kept
-- for good, so without it the listing reads an endpoint's whole history to fill a page.
-- SQLite uses a partial index only when the query repeats its WHERE term: the listing does.
CREATE INDEX IF NOT EXISTS deliveries_failed_by_endpoint ON deliveries (endpoint_id, id)
    WHERE status = 'failed';

-- The same listing with status=pending or delivering. PostgreSQL serves it from the backlog's
-- partial indexes; SQLite would rather walk deliveries_by_endpoint, which is in id order,
-- through the endpoint's whole history to fill a page. The claim cannot pick this index by
-- mistake: its statements name theirs (INDEXED BY) and SQLite matches the WHERE literally.
CREATE INDEX IF NOT EXISTS deliveries_waiting_by_endpoint ON deliveries (endpoint_id, status, id)
    WHERE status IN ('pending', 'delivering');

-- "Events of a conversation" (the events listing filtered by conversationId, in seq order).
-- SQLite has no statistics here and otherwise prefers events_workspace, which already gives
-- seq order, and reads the whole workspace: with the conversation and the workspace both
-- equal this index is the better match for its planner. PostgreSQL plans it with statistics
-- and needs no such index.
CREATE INDEX IF NOT EXISTS events_of_conversation ON events (conversation_id, workspace_id, seq);
