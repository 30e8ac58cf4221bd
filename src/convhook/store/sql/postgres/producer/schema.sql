-- The producer schema on PostgreSQL as the migrations in this folder leave a fresh
-- database (NNNN_name.sql files only: this file is never run).
-- Generated: do not edit. After changing a migration, regenerate with
--     .venv/bin/python scripts/dump-schema
-- tests/integration/test_schema_files.py fails while this file is out of date.

--
-- Name: convhook_claim(text, bigint, bigint, integer, integer, integer); Type: FUNCTION
--

CREATE FUNCTION public.convhook_claim(claimer text, now_ms bigint, until_ms bigint, max_claims integer, lease_factor integer, first_claims integer) RETURNS TABLE(id bigint, event_id text, event_type text, endpoint_id text, conversation_id text, attempts integer, next_attempt_at bigint, body text, url text, secret text, previous_secret text, previous_secret_expires_at bigint, rate_limit double precision, max_in_flight integer, conversation_seq integer, previous_event_id text, traceparent text)
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
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
    WITH reset AS (
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
    due AS (
        SELECT d.endpoint_id FROM deliveries AS d
        WHERE d.status = 'pending' AND d.attempts > 0 AND d.next_attempt_at <= now_ms
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

--
-- Name: convhook_events_fan_out(); Type: FUNCTION
--

CREATE FUNCTION public.convhook_events_fan_out() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO deliveries (event_seq, event_id, endpoint_id, workspace_id, conversation_id,
                            conversation_seq, event_type, next_attempt_at, created_at, updated_at)
    SELECT NEW.seq, NEW.id, e.id, NEW.workspace_id, NEW.conversation_id, NEW.conversation_seq,
           NEW.event_type, NEW.created_at, NEW.created_at, NEW.created_at
    FROM endpoints AS e
    WHERE e.workspace_id = NEW.workspace_id AND e.enabled = 1
      AND ((e.event_types IS NULL AND NEW.event_type LIKE 'conversation.%')
           OR EXISTS (
          SELECT 1 FROM json_array_elements_text(CAST(e.event_types AS json)) AS t (value)
          WHERE t.value = NEW.event_type));
    IF FOUND THEN
        PERFORM pg_notify('convhook_deliveries', '');
    END IF;
    RETURN NULL;
END
$$;

--
-- Name: agents; Type: TABLE
--

CREATE TABLE public.agents (
    id text NOT NULL,
    workspace_id text NOT NULL,
    created_at bigint NOT NULL
);

--
-- Name: api_keys; Type: TABLE
--

CREATE TABLE public.api_keys (
    key_hash text NOT NULL,
    workspace_id text NOT NULL,
    prefix text NOT NULL,
    created_at bigint NOT NULL,
    id text NOT NULL,
    name text NOT NULL,
    last_used_at bigint,
    revoked_at bigint
);

--
-- Name: attempts; Type: TABLE
--

CREATE TABLE public.attempts (
    id bigint NOT NULL,
    delivery_id bigint NOT NULL,
    attempted_at bigint NOT NULL,
    status_code integer,
    latency_ms double precision NOT NULL,
    error text,
    response_body text DEFAULT ''::text NOT NULL
);

--
-- Name: attempts_id_seq; Type: SEQUENCE
--

ALTER TABLE public.attempts ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (
    SEQUENCE NAME public.attempts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: conversations; Type: TABLE
--

CREATE TABLE public.conversations (
    seq bigint NOT NULL,
    id text NOT NULL,
    workspace_id text NOT NULL,
    agent_id text NOT NULL,
    customer_id text,
    campaign_id text,
    status text NOT NULL,
    phase text NOT NULL,
    event_seq integer DEFAULT 0 NOT NULL,
    body text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);

--
-- Name: conversations_seq_seq; Type: SEQUENCE
--

ALTER TABLE public.conversations ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.conversations_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: convhook_schema; Type: TABLE
--

CREATE TABLE public.convhook_schema (
    component text NOT NULL,
    version integer NOT NULL
);

--
-- Name: customers; Type: TABLE
--

CREATE TABLE public.customers (
    seq bigint NOT NULL,
    id text NOT NULL,
    workspace_id text NOT NULL,
    identifier text,
    dnd integer DEFAULT 0 NOT NULL,
    body text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);

--
-- Name: customers_seq_seq; Type: SEQUENCE
--

ALTER TABLE public.customers ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.customers_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: deliveries; Type: TABLE
--

CREATE TABLE public.deliveries (
    id bigint NOT NULL,
    event_seq bigint,
    event_id text NOT NULL,
    endpoint_id text NOT NULL,
    workspace_id text NOT NULL,
    conversation_id text NOT NULL,
    conversation_seq integer NOT NULL,
    event_type text NOT NULL,
    body text,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at bigint NOT NULL,
    lease_owner text,
    lease_expires_at bigint,
    last_status_code integer,
    last_error text,
    last_attempt_at bigint,
    delivered_at bigint,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);

--
-- Name: deliveries_id_seq; Type: SEQUENCE
--

ALTER TABLE public.deliveries ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (
    SEQUENCE NAME public.deliveries_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: endpoints; Type: TABLE
--

CREATE TABLE public.endpoints (
    id text NOT NULL,
    workspace_id text NOT NULL,
    url text NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    event_types text,
    enabled integer DEFAULT 1 NOT NULL,
    disabled_reason text,
    secret text NOT NULL,
    previous_secret text,
    previous_secret_expires_at bigint,
    rate_limit double precision,
    max_in_flight integer DEFAULT 10 NOT NULL,
    failing_since bigint,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    event_seq integer DEFAULT 0 NOT NULL
);

--
-- Name: events; Type: TABLE
--

CREATE TABLE public.events (
    seq bigint NOT NULL,
    id text NOT NULL,
    workspace_id text NOT NULL,
    conversation_id text NOT NULL,
    conversation_seq integer NOT NULL,
    event_type text NOT NULL,
    body text NOT NULL,
    created_at bigint NOT NULL,
    previous_event_id text,
    traceparent text
);

--
-- Name: events_seq_seq; Type: SEQUENCE
--

ALTER TABLE public.events ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.events_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: leader_leases; Type: TABLE
--

CREATE TABLE public.leader_leases (
    name text NOT NULL,
    owner text NOT NULL,
    expires_at bigint NOT NULL
);

--
-- Name: workspaces; Type: TABLE
--

CREATE TABLE public.workspaces (
    id text NOT NULL,
    name text NOT NULL,
    created_at bigint NOT NULL
);

--
-- Name: agents agents_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.agents
    ADD CONSTRAINT agents_pkey PRIMARY KEY (id);

--
-- Name: api_keys api_keys_key_hash_key; Type: CONSTRAINT
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash);

--
-- Name: api_keys api_keys_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY (id);

--
-- Name: attempts attempts_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.attempts
    ADD CONSTRAINT attempts_pkey PRIMARY KEY (id);

--
-- Name: conversations conversations_id_key; Type: CONSTRAINT
--

ALTER TABLE ONLY public.conversations
    ADD CONSTRAINT conversations_id_key UNIQUE (id);

--
-- Name: conversations conversations_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.conversations
    ADD CONSTRAINT conversations_pkey PRIMARY KEY (seq);

--
-- Name: convhook_schema convhook_schema_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.convhook_schema
    ADD CONSTRAINT convhook_schema_pkey PRIMARY KEY (component);

--
-- Name: customers customers_id_key; Type: CONSTRAINT
--

ALTER TABLE ONLY public.customers
    ADD CONSTRAINT customers_id_key UNIQUE (id);

--
-- Name: customers customers_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.customers
    ADD CONSTRAINT customers_pkey PRIMARY KEY (seq);

--
-- Name: customers customers_workspace_id_identifier_key; Type: CONSTRAINT
--

ALTER TABLE ONLY public.customers
    ADD CONSTRAINT customers_workspace_id_identifier_key UNIQUE (workspace_id, identifier);

--
-- Name: deliveries deliveries_event_id_endpoint_id_key; Type: CONSTRAINT
--

ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT deliveries_event_id_endpoint_id_key UNIQUE (event_id, endpoint_id);

--
-- Name: deliveries deliveries_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT deliveries_pkey PRIMARY KEY (id);

--
-- Name: endpoints endpoints_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.endpoints
    ADD CONSTRAINT endpoints_pkey PRIMARY KEY (id);

--
-- Name: events events_conversation; Type: CONSTRAINT
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_conversation UNIQUE (conversation_id, conversation_seq);

--
-- Name: events events_id_key; Type: CONSTRAINT
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_id_key UNIQUE (id);

--
-- Name: events events_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (seq);

--
-- Name: leader_leases leader_leases_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.leader_leases
    ADD CONSTRAINT leader_leases_pkey PRIMARY KEY (name);

--
-- Name: workspaces workspaces_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.workspaces
    ADD CONSTRAINT workspaces_pkey PRIMARY KEY (id);

--
-- Name: api_keys_workspace; Type: INDEX
--

CREATE INDEX api_keys_workspace ON public.api_keys USING btree (workspace_id, created_at, id);

--
-- Name: attempts_by_delivery; Type: INDEX
--

CREATE INDEX attempts_by_delivery ON public.attempts USING btree (delivery_id, id);

--
-- Name: conversations_agent; Type: INDEX
--

CREATE INDEX conversations_agent ON public.conversations USING btree (workspace_id, agent_id, seq);

--
-- Name: conversations_campaign; Type: INDEX
--

CREATE INDEX conversations_campaign ON public.conversations USING btree (workspace_id, campaign_id, seq);

--
-- Name: conversations_created; Type: INDEX
--

CREATE INDEX conversations_created ON public.conversations USING btree (workspace_id, created_at);

--
-- Name: conversations_customer; Type: INDEX
--

CREATE INDEX conversations_customer ON public.conversations USING btree (workspace_id, customer_id, seq);

--
-- Name: conversations_stale; Type: INDEX
--

CREATE INDEX conversations_stale ON public.conversations USING btree (phase, updated_at, id) WHERE (phase = ANY (ARRAY['created'::text, 'dialing'::text, 'active'::text, 'left'::text]));

--
-- Name: conversations_status; Type: INDEX
--

CREATE INDEX conversations_status ON public.conversations USING btree (workspace_id, status, seq);

--
-- Name: conversations_workspace; Type: INDEX
--

CREATE INDEX conversations_workspace ON public.conversations USING btree (workspace_id, seq);

--
-- Name: customers_workspace; Type: INDEX
--

CREATE INDEX customers_workspace ON public.customers USING btree (workspace_id, seq);

--
-- Name: deliveries_by_endpoint; Type: INDEX
--

CREATE INDEX deliveries_by_endpoint ON public.deliveries USING btree (endpoint_id, id);

--
-- Name: deliveries_due; Type: INDEX
--

CREATE INDEX deliveries_due ON public.deliveries USING btree (next_attempt_at, id) WHERE (status = 'pending'::text);

--
-- Name: deliveries_failed; Type: INDEX
--

CREATE INDEX deliveries_failed ON public.deliveries USING btree (endpoint_id, created_at) WHERE (status = 'failed'::text);

--
-- Name: deliveries_failed_by_endpoint; Type: INDEX
--

CREATE INDEX deliveries_failed_by_endpoint ON public.deliveries USING btree (endpoint_id, id) WHERE (status = 'failed'::text);

--
-- Name: deliveries_first_due; Type: INDEX
--

CREATE INDEX deliveries_first_due ON public.deliveries USING btree (next_attempt_at, id) WHERE ((status = 'pending'::text) AND (attempts = 0));

--
-- Name: deliveries_in_flight; Type: INDEX
--

CREATE INDEX deliveries_in_flight ON public.deliveries USING btree (endpoint_id) WHERE (status = 'delivering'::text);

--
-- Name: deliveries_leased; Type: INDEX
--

CREATE INDEX deliveries_leased ON public.deliveries USING btree (lease_expires_at) WHERE (status = 'delivering'::text);

--
-- Name: deliveries_order; Type: INDEX
--

CREATE INDEX deliveries_order ON public.deliveries USING btree (endpoint_id, conversation_id, conversation_seq) WHERE (status = ANY (ARRAY['pending'::text, 'delivering'::text]));

--
-- Name: deliveries_retries_due; Type: INDEX
--

CREATE INDEX deliveries_retries_due ON public.deliveries USING btree (next_attempt_at, id) WHERE ((status = 'pending'::text) AND (attempts > 0));

--
-- Name: endpoints_by_workspace; Type: INDEX
--

CREATE INDEX endpoints_by_workspace ON public.endpoints USING btree (workspace_id, created_at, id);

--
-- Name: events_type; Type: INDEX
--

CREATE INDEX events_type ON public.events USING btree (workspace_id, event_type, seq);

--
-- Name: events_workspace; Type: INDEX
--

CREATE INDEX events_workspace ON public.events USING btree (workspace_id, seq);

--
-- Name: events events_fan_out; Type: TRIGGER
--

CREATE TRIGGER events_fan_out AFTER INSERT ON public.events FOR EACH ROW EXECUTE FUNCTION public.convhook_events_fan_out();

--
-- Name: agents agents_workspace_id_fkey; Type: FK CONSTRAINT
--

ALTER TABLE ONLY public.agents
    ADD CONSTRAINT agents_workspace_id_fkey FOREIGN KEY (workspace_id) REFERENCES public.workspaces(id);

--
-- Name: api_keys api_keys_workspace_id_fkey; Type: FK CONSTRAINT
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_workspace_id_fkey FOREIGN KEY (workspace_id) REFERENCES public.workspaces(id);

--
-- Name: attempts attempts_delivery_id_fkey; Type: FK CONSTRAINT
--

ALTER TABLE ONLY public.attempts
    ADD CONSTRAINT attempts_delivery_id_fkey FOREIGN KEY (delivery_id) REFERENCES public.deliveries(id) ON DELETE CASCADE;

--
-- Name: conversations conversations_workspace_id_fkey; Type: FK CONSTRAINT
--

ALTER TABLE ONLY public.conversations
    ADD CONSTRAINT conversations_workspace_id_fkey FOREIGN KEY (workspace_id) REFERENCES public.workspaces(id);

--
-- Name: customers customers_workspace_id_fkey; Type: FK CONSTRAINT
--

ALTER TABLE ONLY public.customers
    ADD CONSTRAINT customers_workspace_id_fkey FOREIGN KEY (workspace_id) REFERENCES public.workspaces(id);

--
-- Name: deliveries deliveries_endpoint_id_fkey; Type: FK CONSTRAINT
--

ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT deliveries_endpoint_id_fkey FOREIGN KEY (endpoint_id) REFERENCES public.endpoints(id) ON DELETE CASCADE;

--
-- Name: endpoints endpoints_workspace_id_fkey; Type: FK CONSTRAINT
--

ALTER TABLE ONLY public.endpoints
    ADD CONSTRAINT endpoints_workspace_id_fkey FOREIGN KEY (workspace_id) REFERENCES public.workspaces(id);
