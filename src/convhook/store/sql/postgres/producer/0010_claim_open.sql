-- A claim no longer reads the backlog of saturated endpoints to find nothing. Its first
-- statement's scans skip saturated endpoints' rows but still read them: with every endpoint
-- that has deliveries waiting saturated (one endpoint's backlog, the usual drain), each claim
-- read the whole backlog (7 ms behind 10,000 due rows). The statement now first walks the
-- endpoints with deliveries pending or in flight (deliveries_order, one index seek each, in id
-- order) until it meets one that is not saturated, and runs the scans only if it does.
-- Otherwise as in 0009_claim_fairness.sql, whose comments describe the function.

CREATE OR REPLACE FUNCTION convhook_claim(
    claimer TEXT, now_ms BIGINT, until_ms BIGINT, max_claims INTEGER, lease_factor INTEGER,
    first_claims INTEGER
) RETURNS TABLE (
    id BIGINT, event_id TEXT, event_type TEXT, endpoint_id TEXT, conversation_id TEXT,
    attempts INTEGER, next_attempt_at BIGINT, body TEXT, url TEXT, secret TEXT,
    previous_secret TEXT, previous_secret_expires_at BIGINT, rate_limit DOUBLE PRECISION,
    max_in_flight INTEGER, conversation_seq INTEGER, previous_event_id TEXT, traceparent TEXT
) LANGUAGE plpgsql VOLATILE
-- Planned once per session: both statements are keyset scans of the due index under a LIMIT
-- whatever the arguments, and planning them at every call cost about as much as running them.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    locked_ids TEXT[];
    locked_leases INTEGER[];
BEGIN
    -- 1. Expired leases go back to pending (SKIP LOCKED: a row another claimer is resetting is
    -- left to it); lock-free scans find due first attempts and due retries whose
    -- conversation has nothing earlier pending, skipping endpoints already full by an unlocked
    -- count; their endpoints (and those of the reset rows) are locked in id order, so claimers never deadlock each other (NO KEY
    -- UPDATE does not block the foreign-key checks of new deliveries).
    WITH RECURSIVE reset AS (
        UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL
        WHERE deliveries.id IN (SELECT r.id FROM deliveries AS r
                                WHERE r.status = 'delivering' AND r.lease_expires_at <= now_ms
                                FOR UPDATE SKIP LOCKED)
        RETURNING deliveries.endpoint_id
    ),
    saturated AS MATERIALIZED (
        SELECT f.endpoint_id FROM deliveries AS f JOIN endpoints AS e ON e.id = f.endpoint_id
        WHERE f.status = 'delivering'
        GROUP BY f.endpoint_id, e.max_in_flight, e.rate_limit
        HAVING count(*) >= lease_factor * CASE WHEN e.rate_limit IS NULL THEN e.max_in_flight
            ELSE GREATEST(1, LEAST(e.max_in_flight, CAST(trunc(e.rate_limit) AS INTEGER))) END
    ),
    -- The endpoints with deliveries pending or in flight, in id order, one index seek each,
    -- until one is not saturated: with none, the scans below are not run at all.
    reached (endpoint_id) AS (
        (SELECT min(r.endpoint_id) FROM deliveries AS r
         WHERE r.status IN ('pending', 'delivering'))
        UNION ALL
        SELECT (SELECT min(r.endpoint_id) FROM deliveries AS r
                WHERE r.status IN ('pending', 'delivering')
                  AND r.endpoint_id > reached.endpoint_id)
        FROM reached
        WHERE reached.endpoint_id IN (SELECT s.endpoint_id FROM saturated AS s)
    ),
    open AS MATERIALIZED (
        SELECT reached.endpoint_id FROM reached
        WHERE reached.endpoint_id IS NOT NULL
          AND reached.endpoint_id NOT IN (SELECT s.endpoint_id FROM saturated AS s)
        LIMIT 1
    ),
    due AS (
        SELECT d.endpoint_id FROM deliveries AS d
        WHERE d.status = 'pending' AND d.attempts > 0 AND d.next_attempt_at <= now_ms
          AND EXISTS (SELECT 1 FROM open)
          AND d.endpoint_id NOT IN (SELECT s.endpoint_id FROM saturated AS s)
          AND NOT EXISTS (
            SELECT 1 FROM deliveries AS p
            WHERE p.endpoint_id = d.endpoint_id AND p.conversation_id = d.conversation_id
              AND p.status IN ('pending', 'delivering')
              AND p.conversation_seq < d.conversation_seq)
        ORDER BY d.next_attempt_at, d.id
        LIMIT max_claims * 2
    ),
    fresh AS (
        SELECT d.endpoint_id FROM deliveries AS d
        WHERE d.status = 'pending' AND d.attempts = 0 AND d.next_attempt_at <= now_ms
          AND EXISTS (SELECT 1 FROM open)
          AND d.endpoint_id NOT IN (SELECT s.endpoint_id FROM saturated AS s)
          AND NOT EXISTS (
            SELECT 1 FROM deliveries AS p
            WHERE p.endpoint_id = d.endpoint_id AND p.conversation_id = d.conversation_id
              AND p.status IN ('pending', 'delivering')
              AND p.conversation_seq < d.conversation_seq)
        ORDER BY d.next_attempt_at, d.id
        LIMIT max_claims * 2
    ),
    locked AS (
        SELECT e.id, lease_factor * CASE WHEN e.rate_limit IS NULL THEN e.max_in_flight
            ELSE GREATEST(1, LEAST(e.max_in_flight, CAST(trunc(e.rate_limit) AS INTEGER))) END
            AS leases
        FROM endpoints AS e
        WHERE e.enabled = 1
          AND e.id IN (SELECT due.endpoint_id FROM due UNION SELECT fresh.endpoint_id FROM fresh
                       UNION SELECT reset.endpoint_id FROM reset)
        ORDER BY e.id
        FOR NO KEY UPDATE
    )
    SELECT array_agg(locked.id ORDER BY locked.id), array_agg(locked.leases ORDER BY locked.id)
    INTO locked_ids, locked_leases
    FROM locked;
    IF locked_ids IS NULL THEN
        RETURN;
    END IF;
    -- 2. A new statement, so a new snapshot taken under those locks: it counts each locked
    -- endpoint's leases, scans its due first attempts and due deliveries (order checked again
    -- in this snapshot), keeps those within the endpoint's room (first attempts ranked first),
    -- takes up to first_claims first attempts and fills the rest in due order, locks them with
    -- SKIP LOCKED (never waiting on a row another transaction holds, which could deadlock
    -- against its endpoint lock; a row leased meanwhile is no longer pending and drops out),
    -- leases them and returns them with their bodies, events' links and endpoints. Skipped rows
    -- only make the claim smaller, never the limits looser. The scans test the locked ids as an
    -- array on each row: a semi-join with room per row took 26 ms, not 7, to read past the
    -- 10,000 due rows of an endpoint that was full.
    RETURN QUERY
    WITH room AS MATERIALIZED (
        SELECT r.id, r.leases - (SELECT count(*) FROM deliveries AS f
                                 WHERE f.endpoint_id = r.id AND f.status = 'delivering') AS room
        FROM unnest(locked_ids, locked_leases) AS r (id, leases)
    ),
    found AS (
        (SELECT 0 AS tier, d.id, d.endpoint_id, d.next_attempt_at FROM deliveries AS d
         WHERE d.status = 'pending' AND d.attempts = 0 AND d.next_attempt_at <= now_ms
           AND d.endpoint_id = ANY (locked_ids)
           AND NOT EXISTS (
             SELECT 1 FROM deliveries AS p
             WHERE p.endpoint_id = d.endpoint_id AND p.conversation_id = d.conversation_id
               AND p.status IN ('pending', 'delivering')
               AND p.conversation_seq < d.conversation_seq)
         ORDER BY d.next_attempt_at, d.id
         LIMIT LEAST(max_claims * 2, (SELECT sum(l) FROM unnest(locked_leases) AS l)))
        UNION ALL
        (SELECT 1 AS tier, d.id, d.endpoint_id, d.next_attempt_at FROM deliveries AS d
         WHERE d.status = 'pending' AND d.attempts > 0 AND d.next_attempt_at <= now_ms
           AND d.endpoint_id = ANY (locked_ids)
           AND NOT EXISTS (
             SELECT 1 FROM deliveries AS p
             WHERE p.endpoint_id = d.endpoint_id AND p.conversation_id = d.conversation_id
               AND p.status IN ('pending', 'delivering')
               AND p.conversation_seq < d.conversation_seq)
         ORDER BY d.next_attempt_at, d.id
         LIMIT LEAST(max_claims * 2, (SELECT sum(l) FROM unnest(locked_leases) AS l)))
    ),
    due AS (
        SELECT d.id, d.endpoint_id, d.next_attempt_at, d.tier,
               row_number() OVER (PARTITION BY d.endpoint_id
                                  ORDER BY d.tier, d.next_attempt_at, d.id) AS rank
        FROM (SELECT found.id, found.endpoint_id, found.next_attempt_at, min(found.tier) AS tier
              FROM found GROUP BY found.id, found.endpoint_id, found.next_attempt_at) AS d
    ),
    fits AS (
        SELECT due.id, due.next_attempt_at,
               due.tier = 0 AND row_number() OVER (PARTITION BY due.tier
                                                   ORDER BY due.next_attempt_at, due.id)
                                <= first_claims AS in_share
        FROM due JOIN room ON room.id = due.endpoint_id
        WHERE due.rank <= room.room
    ),
    picked AS (
        SELECT fits.id FROM fits
        ORDER BY fits.in_share DESC, fits.next_attempt_at, fits.id
        LIMIT max_claims
    ),
    free AS (
        SELECT f.id FROM deliveries AS f
        WHERE f.id IN (SELECT picked.id FROM picked) AND f.status = 'pending'
        FOR UPDATE SKIP LOCKED
    ),
    leased AS (
        UPDATE deliveries AS d
        SET status = 'delivering', lease_owner = claimer, lease_expires_at = until_ms
        FROM free
        WHERE d.id = free.id
        RETURNING d.id, d.event_id, d.event_type, d.endpoint_id, d.conversation_id, d.attempts,
                  d.event_seq, d.next_attempt_at, d.body, d.conversation_seq
    )
    SELECT l.id, l.event_id, l.event_type, l.endpoint_id, l.conversation_id, l.attempts,
           l.next_attempt_at,
           coalesce(l.body, ev.body),
           e.url, e.secret, e.previous_secret, e.previous_secret_expires_at, e.rate_limit,
           e.max_in_flight, l.conversation_seq, ev.previous_event_id, ev.traceparent
    FROM leased AS l JOIN endpoints AS e ON e.id = l.endpoint_id
    LEFT JOIN events AS ev ON ev.seq = l.event_seq;
END
$$;
