-- Tidebase schema, version 1 (baseline): the tables, their constraints and indexes.
--
-- This file holds data only: tables, columns, constraints, indexes, and the two functions that column defaults
-- call. Behaviour (every state transition, the fence, the event counter, the triggers) lives in
-- `sql/functions/*.sql`, one file per concern, re-applied by the migrator whenever a file changes;
-- `sql/functions/README.md` maps each invariant to the function that enforces it. From here on, tables and indexes
-- change only through new numbered migrations (`0002_...`), never by editing this file.
--
-- The data model in prose.
--
-- A *run* is one execution of a named workflow, identified by a client-chosen or generated id. It carries its input
-- (and the SHA-256 of the input's canonical JSON, so a resume with other input is refused), its status, its result or
-- error, and the lease: the owner, a *fencing token* that grows by one on every acquisition, and an expiry computed
-- with the database clock. Every write made on behalf of a lease holder names its token and is admitted or refused
-- by one fence (tidebase.fence) while the run row is locked, so a holder whose lease was taken over (a zombie) is
-- refused before it changes anything. HTTP clients name their lease by owner; their door turns the owner into the
-- token (tidebase.token_of) and then writes through the same functions. The run row also carries the per-run event
-- counter (event_seq) and, for queued runs, the queue fields: queue, priority, availability, retry policy, deadline,
-- dedupe key, its channels (webhooks) and recovery webhook.
--
-- A *step* is one checkpoint: (run_id, key) where the key is the step name plus its occurrence in the run
-- (`search`, `search#2`, ...). Completion is a conditional upsert: a completed step is never overwritten, and its
-- stored input hash is compared in the same statement. A side-effecting step first commits a `running` marker with
-- its resume contract and a step lease; a marker found on resume without a completion tells the next holder that the
-- step was interrupted, and the contract decides whether it may run again or must be parked for review.
--
-- *Events* are the per-run log: `seq` is taken from the run row's counter while the row is locked by the writing
-- transaction, so writers of one run serialize, each transaction's events commit in seq order, and the log is
-- gap-free. A transaction that appends events sends a NOTIFY on channel `tidebase_events` with the run id while
-- anyone listens (tidebase.listeners); Postgres delivers it only when that transaction commits.
--
-- *State* is a set of named streams per run (state_streams); each write stores a new gap-free version
-- (state_versions: the value, and the patch for a merge) and moves the stream's current value, under the stream
-- row's lock, in the writer's transaction. Snapshots are labelled versions, in a stream named after their target.
--
-- *Gates* are human decisions inside a run, one per (run, name), resolved exactly once; only the SHA-256 of a
-- gate's resolve token is stored. *Run edges* link a parent to a child run under an edge name unique per parent (and
-- a source run to its forks). *Usage* records what a run spent, with `saved` copies for the work a replay did not
-- redo. *Recoveries* record every requeue or takeover of a run whose holder went away.
--
-- *Queues* are runs with queue fields; queue_config holds each queue's caps. *Schedules* fire once per fire time
-- (schedule_fires). The *outbox* holds webhook deliveries (channel deliveries and recovery/invoke webhooks), written
-- in the transaction of the event they report and delivered after commit; outbox_attempts records every try.
--
-- Every table that belongs to a run leads its primary key with run_id. Lock order, everywhere: the run row first,
-- then the rows of the run's steps, gates, edges and streams.
--
-- Custom SQLSTATEs (class TB) carry refusals to the client, which maps them to typed exceptions in one place
-- (tidebase.core.translate):
--   TB001 run not found               TB002 lease held by another owner    TB003 lease lost (stale token)
--   TB004 run cancelled               TB005 input or workflow mismatch      TB006 step parked for manual review
--   TB007 run already completed       TB008 step not found                 TB009 conflict (state does not allow it)
--   TB010 state not found             TB011 gate not found                 TB012 gate already resolved
--   TB013 child edge exists with another workflow or input                 TB014 step already completed
--   TB015 step is not in manual review
--
-- Every time decision uses tidebase.now(): the database clock, which a test session can pin with
-- `SET tidebase.fake_now = '...'`.

CREATE SCHEMA IF NOT EXISTS tidebase;

-- The clock and ids: column defaults call them, so they belong to the tables.
CREATE FUNCTION tidebase.now() RETURNS timestamptz
LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(nullif(current_setting('tidebase.fake_now', true), '')::timestamptz, clock_timestamp())
$$;

CREATE FUNCTION tidebase.new_id(prefix text) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT prefix || replace(gen_random_uuid()::text, '-', '')
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Runs, steps, events.

CREATE TABLE tidebase.runs (
    id                  text PRIMARY KEY,
    workflow            text NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'queued', 'running', 'waiting', 'manual_review',
                                          'completed', 'failed', 'cancelled')),
    input               jsonb NOT NULL DEFAULT '{}',
    input_hash          text NOT NULL,
    result              jsonb,
    error               jsonb,
    failure_class       text,
    metadata            jsonb NOT NULL DEFAULT '{}',
    parent_id           text REFERENCES tidebase.runs (id) ON DELETE SET NULL,
    lease_owner         text,
    fencing_token       bigint NOT NULL DEFAULT 0,
    lease_expires_at    timestamptz,
    lease_ms            integer NOT NULL DEFAULT 30000 CHECK (lease_ms > 0),
    attempt             integer NOT NULL DEFAULT 0,
    event_seq           bigint NOT NULL DEFAULT 0,
    cancel_reason       text,
    cancel_actor        text,
    cancelled_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    updated_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    started_at          timestamptz,
    completed_at        timestamptz,
    queue               text,
    priority            integer NOT NULL DEFAULT 0,
    dedupe_key          text,
    available_at        timestamptz,
    max_attempts        integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    failures            integer NOT NULL DEFAULT 0,
    retry_backoff_ms    integer NOT NULL DEFAULT 1000 CHECK (retry_backoff_ms >= 0),
    deadline_at         timestamptz,
    webhooks            jsonb NOT NULL DEFAULT '[]',
    claimed_at          timestamptz,
    recovery_webhook    text,
    recovery_secret     text,
    resume_queue        text,
    CHECK (length(id) BETWEEN 1 AND 128),
    CHECK (length(workflow) BETWEEN 1 AND 512)
) WITH (fillfactor = 70);  -- room for HOT updates: each step bumps the run's event counter

CREATE INDEX runs_newest ON tidebase.runs (created_at DESC, id DESC);
CREATE INDEX runs_status_newest ON tidebase.runs (status, created_at DESC, id DESC);
CREATE INDEX runs_workflow_newest ON tidebase.runs (workflow, created_at DESC, id DESC);
CREATE INDEX runs_parent ON tidebase.runs (parent_id) WHERE parent_id IS NOT NULL;
-- Claim order is priority, availability, creation, id: the index serves it whole, so a claim reads only the runs it
-- takes, however long the backlog.
CREATE INDEX runs_queue_due ON tidebase.runs (queue, priority DESC, available_at, created_at, id)
    WHERE status = 'queued';
CREATE INDEX runs_queue_running ON tidebase.runs (queue) WHERE status = 'running' AND queue IS NOT NULL;
CREATE INDEX runs_queue_status ON tidebase.runs (queue, status) WHERE queue IS NOT NULL;
CREATE INDEX runs_queue_claimed ON tidebase.runs (queue, claimed_at) WHERE claimed_at IS NOT NULL;
-- Every cross-run scan of the reconciler is served by a partial index, so a tick costs the same on a table of a
-- million runs as on ten.
CREATE INDEX runs_lease_expiry ON tidebase.runs (lease_expires_at)
    WHERE status = 'running' AND (queue IS NOT NULL OR resume_queue IS NOT NULL);
CREATE INDEX runs_webhook_lease_expiry ON tidebase.runs (lease_expires_at)
    WHERE status = 'running' AND queue IS NULL AND recovery_webhook IS NOT NULL;
CREATE INDEX runs_deadline ON tidebase.runs (deadline_at)
    WHERE deadline_at IS NOT NULL AND status IN ('pending', 'queued', 'running', 'waiting');
-- One active (queued or running) run per (queue, dedupe key).
CREATE UNIQUE INDEX runs_dedupe ON tidebase.runs (queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');

CREATE TABLE tidebase.steps (
    run_id              text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    key                 text NOT NULL,
    id                  text NOT NULL,
    name                text NOT NULL,
    occurrence          integer NOT NULL DEFAULT 1,
    input_hash          text NOT NULL,
    input               jsonb,
    contract            jsonb NOT NULL DEFAULT '{}',
    status              text NOT NULL
                        CHECK (status IN ('running', 'completed', 'failed_retryable', 'failed', 'manual_review')),
    output              jsonb,
    error               jsonb,
    resume_decision     text,
    lease_owner         text,
    lease_token         bigint,
    lease_expires_at    timestamptz,
    attempt             integer NOT NULL DEFAULT 1,
    started_at          timestamptz,
    completed_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    updated_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    options             jsonb,
    usage_from          text,  -- a step a fork copied: the run whose usage records its execution
    PRIMARY KEY (run_id, key)
);

CREATE TABLE tidebase.events (
    run_id              text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    seq                 bigint NOT NULL,
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    type                text NOT NULL,
    payload             jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    PRIMARY KEY (run_id, seq)
);

-- The doorbell's listeners: event writers notify only while some session listens (see tidebase.ring).
CREATE TABLE tidebase.listeners (
    pid                 integer PRIMARY KEY,
    channel             text NOT NULL,
    since               timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------------------------
-- Live state.

CREATE TABLE tidebase.state_streams (
    run_id              text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    name                text NOT NULL,
    id                  text NOT NULL,
    target_type         text NOT NULL DEFAULT 'run',
    target_id           text,
    current_version     bigint NOT NULL DEFAULT 0,
    current_value       jsonb,
    metadata            jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    updated_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    PRIMARY KEY (run_id, name)
);

CREATE TABLE tidebase.state_versions (
    run_id              text NOT NULL,
    stream              text NOT NULL,
    version             bigint NOT NULL CHECK (version >= 1),
    id                  text NOT NULL,
    value               jsonb,
    patch               jsonb,
    label               text,
    reason              text,
    importance          text NOT NULL DEFAULT 'normal'
                        CHECK (importance IN ('transient', 'normal', 'checkpoint', 'milestone')),
    metadata            jsonb NOT NULL DEFAULT '{}',
    step_key            text,
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    PRIMARY KEY (run_id, stream, version),
    FOREIGN KEY (run_id, stream) REFERENCES tidebase.state_streams (run_id, name) ON DELETE CASCADE
);

CREATE INDEX state_versions_labeled ON tidebase.state_versions (run_id, label) WHERE label IS NOT NULL;

-- ---------------------------------------------------------------------------------------------------------------
-- Gates, edges, usage.

CREATE TABLE tidebase.gates (
    run_id              text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    name                text NOT NULL,
    id                  text NOT NULL,
    prompt              text NOT NULL DEFAULT '',
    data                jsonb NOT NULL DEFAULT '{}',
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'approved', 'rejected', 'canceled')),
    decision            text,
    actor               text,
    payload             jsonb,
    token_hash          text NOT NULL,
    capability          jsonb,
    channels            jsonb NOT NULL DEFAULT '[]',
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    updated_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    resolved_at         timestamptz,
    PRIMARY KEY (run_id, name),
    CHECK ((status = 'pending') = (decision IS NULL))
);
CREATE UNIQUE INDEX gates_id ON tidebase.gates (id);
CREATE INDEX gates_pending ON tidebase.gates (created_at, id) WHERE status = 'pending';
CREATE INDEX gates_decided ON tidebase.gates (resolved_at DESC, id DESC) WHERE status <> 'pending';

CREATE TABLE tidebase.run_edges (
    parent_run_id       text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    name                text NOT NULL,
    id                  text NOT NULL,
    child_run_id        text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    edge_type           text NOT NULL DEFAULT 'child',
    metadata            jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    PRIMARY KEY (parent_run_id, name)
);
CREATE INDEX run_edges_child ON tidebase.run_edges (child_run_id);

CREATE TABLE tidebase.usage (
    run_id              text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    id                  text NOT NULL,
    step_key            text,
    kind                text NOT NULL DEFAULT 'custom',
    provider            text,
    model               text,
    label               text,
    unit                text,
    quantity            double precision,
    input_tokens        bigint CHECK (input_tokens >= 0),
    output_tokens       bigint CHECK (output_tokens >= 0),
    total_tokens        bigint CHECK (total_tokens >= 0),
    cost_usd            numeric CHECK (cost_usd >= 0),
    metadata            jsonb NOT NULL DEFAULT '{}',
    saved               boolean NOT NULL DEFAULT false,
    saved_from          text,
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    PRIMARY KEY (run_id, id)
);
CREATE INDEX usage_step ON tidebase.usage (run_id, step_key) WHERE step_key IS NOT NULL;
CREATE INDEX usage_created ON tidebase.usage (created_at);

-- ---------------------------------------------------------------------------------------------------------------
-- Queues, recoveries, schedules.

CREATE TABLE tidebase.queue_config (
    queue               text PRIMARY KEY,
    concurrency         integer CHECK (concurrency >= 0),
    rate_limit          integer CHECK (rate_limit >= 0),
    rate_window_ms      integer NOT NULL DEFAULT 1000 CHECK (rate_window_ms > 0),
    paused              boolean NOT NULL DEFAULT false,
    updated_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    invoke_url          text
);
CREATE INDEX queue_config_push ON tidebase.queue_config (queue) WHERE invoke_url IS NOT NULL;

CREATE TABLE tidebase.recoveries (
    run_id              text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    id                  text NOT NULL,
    reason              text NOT NULL,
    detected_by         text NOT NULL,
    detected_at         timestamptz NOT NULL DEFAULT tidebase.now(),
    previous_owner      text,
    previous_token      bigint,
    interrupted_steps   jsonb NOT NULL DEFAULT '[]',
    outcome             text NOT NULL DEFAULT 'requeued'
                        CHECK (outcome IN ('requeued', 'resumed', 'cancelled')),
    resumed_by          text,
    resumed_at          timestamptz,
    resumed_token       bigint,
    PRIMARY KEY (run_id, id)
);
CREATE INDEX recoveries_open ON tidebase.recoveries (run_id) WHERE outcome = 'requeued';

CREATE TABLE tidebase.schedules (
    name                text PRIMARY KEY,
    cron                text NOT NULL,
    workflow            text NOT NULL,
    input               jsonb NOT NULL DEFAULT '{}',
    input_hash          text NOT NULL,
    queue               text NOT NULL DEFAULT 'default',
    priority            integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    enabled             boolean NOT NULL DEFAULT true,
    next_fire_at        timestamptz NOT NULL,
    last_fire_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    updated_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    last_enqueued_at    timestamptz
);
CREATE INDEX schedules_due ON tidebase.schedules (next_fire_at) WHERE enabled;

CREATE TABLE tidebase.schedule_fires (
    schedule            text NOT NULL REFERENCES tidebase.schedules (name) ON DELETE CASCADE,
    fire_at             timestamptz NOT NULL,
    status              text NOT NULL CHECK (status IN ('enqueued', 'missed')),
    run_id              text,
    fired_by            text,
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    PRIMARY KEY (schedule, fire_at)
);

-- ---------------------------------------------------------------------------------------------------------------
-- The webhook outbox.

CREATE TABLE tidebase.outbox (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id              text,
    kind                text NOT NULL CHECK (kind IN ('recovery', 'channel')),
    event_type          text NOT NULL,
    url                 text NOT NULL,
    secret              text,
    body                text NOT NULL,
    status              text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts            integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 10,
    next_attempt_at     timestamptz NOT NULL DEFAULT tidebase.now(),
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    delivered_at        timestamptz,
    public_id           text NOT NULL DEFAULT tidebase.new_id('del_'),
    reason              text,
    auto                boolean NOT NULL DEFAULT false,
    gate_id             text,
    http_status         integer,
    response_body       text,
    completed_at        timestamptz,
    source              jsonb,
    event_seq           bigint,
    channel_id          text  -- the run channel (runs.webhooks entry id) a delivery goes to; null for a gate's own
);
CREATE INDEX outbox_due ON tidebase.outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_run ON tidebase.outbox (run_id, id) WHERE run_id IS NOT NULL;
CREATE UNIQUE INDEX outbox_public_id ON tidebase.outbox (public_id);
CREATE INDEX outbox_pending_recovery ON tidebase.outbox (run_id) WHERE kind = 'recovery' AND status = 'pending';

CREATE TABLE tidebase.outbox_attempts (
    outbox_id           bigint NOT NULL REFERENCES tidebase.outbox (id) ON DELETE CASCADE,
    attempt             integer NOT NULL,
    started_at          timestamptz NOT NULL,
    duration_ms         integer NOT NULL,
    status_code         integer,
    error               text,
    ok                  boolean NOT NULL,
    PRIMARY KEY (outbox_id, attempt)
);
