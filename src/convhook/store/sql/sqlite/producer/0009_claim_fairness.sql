-- First attempts due, in due order: a claim takes these first, up to a share of its limit
-- (store/delivery/claims.py, FIRST_SHARE), without reading through the retries of a failing
-- endpoint that were due before them.
CREATE INDEX deliveries_first_due ON deliveries (next_attempt_at, id)
    WHERE status = 'pending' AND attempts = 0;
