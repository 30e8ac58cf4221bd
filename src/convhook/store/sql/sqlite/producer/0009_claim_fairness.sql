-- First attempts due, in due order: a claim takes these first, up to a share of its limit
-- (store/delivery/claims.py, FIRST_SHARE), without reading through the retries of a failing
-- endpoint that were due before them.
CREATE INDEX deliveries_first_due ON deliveries (next_attempt_at, id)
    WHERE status = 'pending' AND attempts = 0;

-- Retries due, in due order: a claim reads them apart from first attempts, so with no retry
-- due (the common case) it reads nothing here, and no row is read by two of its scans.
CREATE INDEX deliveries_retries_due ON deliveries (next_attempt_at, id)
    WHERE status = 'pending' AND attempts > 0;
