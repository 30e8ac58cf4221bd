-- The inbox schema on PostgreSQL as the migrations in this folder leave a fresh
-- database (NNNN_name.sql files only: this file is never run).
-- Generated: do not edit. After changing a migration, regenerate with
--     .venv/bin/python scripts/dump-schema
-- tests/integration/test_schema_files.py fails while this file is out of date.

--
-- Name: convhook_inbox; Type: TABLE
--

CREATE TABLE public.convhook_inbox (
    seq bigint NOT NULL,
    event_id text NOT NULL,
    webhook_id text,
    event_type text NOT NULL,
    body bytea NOT NULL,
    headers text NOT NULL,
    received_at double precision NOT NULL,
    conversation_id text,
    sequence integer,
    traceparent text,
    origin text DEFAULT 'delivery'::text NOT NULL,
    CONSTRAINT convhook_inbox_origin_check CHECK ((origin = ANY (ARRAY['delivery'::text, 'reconciled'::text])))
);

--
-- Name: convhook_inbox_conversations; Type: TABLE
--

CREATE TABLE public.convhook_inbox_conversations (
    conversation_id text NOT NULL,
    last_sequence integer DEFAULT 0 NOT NULL,
    last_event_id text,
    last_rank integer DEFAULT 0 NOT NULL,
    updated_at double precision NOT NULL
);

--
-- Name: convhook_inbox_gaps; Type: TABLE
--

CREATE TABLE public.convhook_inbox_gaps (
    id bigint NOT NULL,
    event_id text NOT NULL,
    conversation_id text NOT NULL,
    kind text NOT NULL,
    after_sequence integer,
    before_sequence integer,
    status text NOT NULL,
    reason text,
    filled integer DEFAULT 0 NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    detected_at double precision NOT NULL,
    resolved_at double precision,
    CONSTRAINT convhook_inbox_gaps_kind_check CHECK ((kind = ANY (ARRAY['gap'::text, 'out_of_order'::text]))),
    CONSTRAINT convhook_inbox_gaps_status_check CHECK ((status = ANY (ARRAY['open'::text, 'filled'::text, 'unfilled'::text, 'recorded'::text])))
);

--
-- Name: convhook_inbox_gaps_id_seq; Type: SEQUENCE
--

ALTER TABLE public.convhook_inbox_gaps ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.convhook_inbox_gaps_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: convhook_inbox_seq_seq; Type: SEQUENCE
--

ALTER TABLE public.convhook_inbox ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.convhook_inbox_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: convhook_inbox_state; Type: TABLE
--

CREATE TABLE public.convhook_inbox_state (
    event_id text NOT NULL,
    status text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at double precision,
    handlers_done text DEFAULT '[]'::text NOT NULL,
    last_error text,
    updated_at double precision NOT NULL,
    CONSTRAINT convhook_inbox_state_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'running'::text, 'done'::text, 'failed'::text])))
);

--
-- Name: convhook_schema; Type: TABLE
--

CREATE TABLE public.convhook_schema (
    component text NOT NULL,
    version integer NOT NULL
);

--
-- Name: convhook_inbox_conversations convhook_inbox_conversations_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.convhook_inbox_conversations
    ADD CONSTRAINT convhook_inbox_conversations_pkey PRIMARY KEY (conversation_id);

--
-- Name: convhook_inbox_gaps convhook_inbox_gaps_event_id_key; Type: CONSTRAINT
--

ALTER TABLE ONLY public.convhook_inbox_gaps
    ADD CONSTRAINT convhook_inbox_gaps_event_id_key UNIQUE (event_id);

--
-- Name: convhook_inbox_gaps convhook_inbox_gaps_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.convhook_inbox_gaps
    ADD CONSTRAINT convhook_inbox_gaps_pkey PRIMARY KEY (id);

--
-- Name: convhook_inbox convhook_inbox_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.convhook_inbox
    ADD CONSTRAINT convhook_inbox_pkey PRIMARY KEY (event_id);

--
-- Name: convhook_inbox convhook_inbox_seq_key; Type: CONSTRAINT
--

ALTER TABLE ONLY public.convhook_inbox
    ADD CONSTRAINT convhook_inbox_seq_key UNIQUE (seq);

--
-- Name: convhook_inbox_state convhook_inbox_state_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.convhook_inbox_state
    ADD CONSTRAINT convhook_inbox_state_pkey PRIMARY KEY (event_id);

--
-- Name: convhook_inbox convhook_inbox_webhook_id_key; Type: CONSTRAINT
--

ALTER TABLE ONLY public.convhook_inbox
    ADD CONSTRAINT convhook_inbox_webhook_id_key UNIQUE (webhook_id);

--
-- Name: convhook_schema convhook_schema_pkey; Type: CONSTRAINT
--

ALTER TABLE ONLY public.convhook_schema
    ADD CONSTRAINT convhook_schema_pkey PRIMARY KEY (component);

--
-- Name: convhook_inbox_conversation; Type: INDEX
--

CREATE INDEX convhook_inbox_conversation ON public.convhook_inbox USING btree (conversation_id, sequence) WHERE (conversation_id IS NOT NULL);

--
-- Name: convhook_inbox_gaps_conversation; Type: INDEX
--

CREATE INDEX convhook_inbox_gaps_conversation ON public.convhook_inbox_gaps USING btree (conversation_id, after_sequence);

--
-- Name: convhook_inbox_state_due; Type: INDEX
--

CREATE INDEX convhook_inbox_state_due ON public.convhook_inbox_state USING btree (next_attempt_at) WHERE (status = ANY (ARRAY['pending'::text, 'running'::text]));

--
-- Name: convhook_inbox_state_failed; Type: INDEX
--

CREATE INDEX convhook_inbox_state_failed ON public.convhook_inbox_state USING btree (status) WHERE (status = 'failed'::text);

--
-- Name: convhook_inbox_state convhook_inbox_state_event_id_fkey; Type: FK CONSTRAINT
--

ALTER TABLE ONLY public.convhook_inbox_state
    ADD CONSTRAINT convhook_inbox_state_event_id_fkey FOREIGN KEY (event_id) REFERENCES public.convhook_inbox(event_id) ON DELETE CASCADE;
