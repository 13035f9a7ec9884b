-- Tidebase schema, version 4: queues, workers' claims, crash recovery, deadlines, cascading cancellation, schedules
-- and the webhook outbox.
--
-- *Queued runs* are ordinary runs with queue fields: a queue name, a priority, the time they become available, a
-- retry policy (max_attempts, failures so far, backoff) and an optional deadline and dedupe key. A worker claims them
-- with tidebase.claim_runs: per queue, in canonical (sorted) order, it locks the queue's config row, checks the
-- queue's concurrency and rate caps under that lock, and takes the due runs with FOR UPDATE SKIP LOCKED, giving each
-- a new fencing token exactly as acquire_run does. Because every claimer of a queue holds its config row while it
-- counts and claims, caps hold across any number of competing workers.
--
-- *Dedupe*: a partial unique index admits one active (queued or running) run per (queue, dedupe_key); an enqueue that
-- meets an active duplicate returns it instead of creating another.
--
-- *Recovery*: the reconciler (one active at a time, by advisory lock, in workers and the server) moves runs whose
-- lease expired back to `queued` in short transactions that re-check the condition under the row lock, and records
-- each attempt in tidebase.recoveries (who detected it, when, why, the previous holder, and the outcome, filled in when
-- a worker resumes the run). The zombie keeps its token but the run is no longer `running` under it, so every fenced
-- write it tries is refused; the next claim bumps the token.
--
-- *Retries*: fail_run (replaced here, same signature) puts a queued run whose failures are below max_attempts back to
-- `queued` after an exponential backoff; the last failure marks it `failed` with failure class `max_retries`.
--
-- *Gates*: resolving the last pending gate of a suspended queued run puts it back on its queue (resolve_gate,
-- replaced here, same signature).
--
-- *Cancellation* (cancel_run, replaced here, same signature) cascades: the run's pending gates become `canceled`
-- (their waiters are woken), and its non-terminal child runs are cancelled with the same reason, parent before child.
--
-- *Schedules* fire at most once per fire time: a fire is a conditional update of the schedule's next_fire_at plus a
-- row in schedule_fires keyed by (schedule, fire_at). Fire times skipped while no reconciler ran are recorded as
-- `missed`, not silently collapsed.
--
-- *Outbox*: webhook deliveries written in the transaction of the event they report (at its commit, by a deferred
-- trigger on the run row), delivered after commit by a
-- dispatcher that claims due rows with SKIP LOCKED; every attempt is recorded in outbox_attempts.
--
-- Every cross-run scan of the reconciler is served by a partial index (expired leases, due queued runs, deadlines,
-- due schedules, due deliveries), so a tick costs the same on a table of a million runs as on ten.

ALTER TABLE tidebase.runs
    ADD COLUMN queue            text,
    ADD COLUMN priority         integer NOT NULL DEFAULT 0,
    ADD COLUMN dedupe_key       text,
    ADD COLUMN available_at     timestamptz,
    ADD COLUMN max_attempts     integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    ADD COLUMN failures         integer NOT NULL DEFAULT 0,
    ADD COLUMN retry_backoff_ms integer NOT NULL DEFAULT 1000 CHECK (retry_backoff_ms >= 0),
    ADD COLUMN deadline_at      timestamptz,
    ADD COLUMN webhooks         jsonb NOT NULL DEFAULT '[]';

CREATE INDEX runs_queue_due ON tidebase.runs (queue, priority DESC, available_at, id) WHERE status = 'queued';
CREATE INDEX runs_queue_running ON tidebase.runs (queue) WHERE status = 'running' AND queue IS NOT NULL;
CREATE INDEX runs_lease_expiry ON tidebase.runs (lease_expires_at) WHERE status = 'running' AND queue IS NOT NULL;
CREATE INDEX runs_deadline ON tidebase.runs (deadline_at)
    WHERE deadline_at IS NOT NULL AND status IN ('pending', 'queued', 'running', 'waiting');
CREATE UNIQUE INDEX runs_dedupe ON tidebase.runs (queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');

CREATE TABLE tidebase.queue_config (
    queue               text PRIMARY KEY,
    concurrency         integer CHECK (concurrency >= 0),
    rate_limit          integer CHECK (rate_limit >= 0),
    rate_window_ms      integer NOT NULL DEFAULT 1000 CHECK (rate_window_ms > 0),
    window_start        timestamptz,
    window_count        integer NOT NULL DEFAULT 0,
    paused              boolean NOT NULL DEFAULT false,
    updated_at          timestamptz NOT NULL DEFAULT tidebase.now()
);

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
    updated_at          timestamptz NOT NULL DEFAULT tidebase.now()
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
    max_attempts        integer NOT NULL DEFAULT 8,
    next_attempt_at     timestamptz NOT NULL DEFAULT tidebase.now(),
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    delivered_at        timestamptz
);
CREATE INDEX outbox_due ON tidebase.outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_run ON tidebase.outbox (run_id, id) WHERE run_id IS NOT NULL;

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

-- Queues the webhook deliveries that event p_type of run r matches: the run's `webhooks` entries whose `events`
-- filter names the type (or a `prefix.*`; a missing or empty filter matches every type), and for recovery events
-- the entries of kind `recovery`. Called inside the
-- transaction that appends the event, so a delivery exists if and only if the event committed.
CREATE FUNCTION tidebase.queue_webhooks(p_run_id text, p_hooks jsonb, p_type text, p_payload jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    h jsonb;
    v_kind text;
BEGIN
    IF p_hooks IS NULL OR jsonb_array_length(p_hooks) = 0 THEN
        RETURN;
    END IF;
    FOR h IN SELECT * FROM jsonb_array_elements(p_hooks) LOOP
        v_kind := coalesce(h ->> 'kind', 'channel');
        IF (v_kind = 'recovery' AND p_type IN ('run.recovering', 'run.failed'))
           OR (v_kind = 'channel' AND EXISTS (
                   SELECT 1 FROM jsonb_array_elements_text(coalesce(nullif(h -> 'events', '[]'), '["*"]')) f
                    WHERE f = '*' OR f = p_type OR (f LIKE '%.*' AND p_type LIKE left(f, -1) || '%'))) THEN
            INSERT INTO tidebase.outbox (run_id, kind, event_type, url, secret, body)
            VALUES (p_run_id, v_kind, p_type, h ->> 'url', h ->> 'secret',
                    jsonb_build_object('type', p_type, 'runId', p_run_id, 'kind', v_kind, 'data', p_payload,
                                       'at', to_char(tidebase.now() AT TIME ZONE 'UTC',
                                                     'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text);
        END IF;
    END LOOP;
END
$$;

-- Webhooks see every event of their run, through a trigger, so no writer has to remember. Every event advances the
-- run row's event counter, so the trigger sits on runs: its WHEN clause (a comparison on the row being written)
-- keeps runs without webhooks at zero cost, and for the others it is deferred to commit, when the events of the
-- transaction's seq range (OLD.event_seq, NEW.event_seq] are all inserted.
CREATE FUNCTION tidebase.runs_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    e tidebase.events%ROWTYPE;
    v_from bigint := CASE WHEN TG_OP = 'INSERT' THEN 0 ELSE OLD.event_seq END;
BEGIN
    FOR e IN SELECT * FROM tidebase.events
              WHERE run_id = NEW.id AND seq > v_from AND seq <= NEW.event_seq ORDER BY seq LOOP
        IF e.type <> 'gate.created' THEN  -- queued by begin_gate_v2, which alone knows the resolve token
            PERFORM tidebase.queue_webhooks(NEW.id, NEW.webhooks, e.type, e.payload);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER runs_webhooks_insert AFTER INSERT ON tidebase.runs DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.webhooks <> '[]'::jsonb) EXECUTE FUNCTION tidebase.runs_webhooks();
CREATE CONSTRAINT TRIGGER runs_webhooks_update AFTER UPDATE ON tidebase.runs DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.webhooks <> '[]'::jsonb AND NEW.event_seq > OLD.event_seq)
    EXECUTE FUNCTION tidebase.runs_webhooks();

-- ---------------------------------------------------------------------------------------------------------------
-- Enqueue and claim.

-- Creates a queued run, or returns the active run that holds (queue, dedupe key), or the run with this id
-- (created = false). TB005 when the id exists for another workflow.
CREATE FUNCTION tidebase.enqueue_run(
    p_id text, p_workflow text, p_input jsonb, p_input_hash text, p_metadata jsonb, p_queue text, p_priority integer,
    p_dedupe_key text, p_delay_ms bigint, p_max_attempts integer, p_backoff_ms integer, p_deadline timestamptz,
    p_lease_ms integer, p_webhooks jsonb,
    OUT run tidebase.runs, OUT created boolean
)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..5 LOOP
        IF p_dedupe_key IS NOT NULL THEN
            SELECT * INTO run FROM tidebase.runs
             WHERE queue = p_queue AND dedupe_key = p_dedupe_key AND status IN ('queued', 'running');
            IF FOUND THEN
                created := false;
                RETURN;
            END IF;
        END IF;
        -- ON CONFLICT without a target covers both the id and the dedupe index: a racing enqueue of the same key
        -- waits for the winner's commit and then inserts nothing.
        INSERT INTO tidebase.runs (id, workflow, status, input, input_hash, metadata, lease_ms, event_seq, queue,
                                   priority, dedupe_key, available_at, max_attempts, retry_backoff_ms, deadline_at,
                                   webhooks)
        VALUES (p_id, p_workflow, 'queued', coalesce(p_input, '{}'), p_input_hash, coalesce(p_metadata, '{}'),
                coalesce(p_lease_ms, 30000), 1, p_queue, coalesce(p_priority, 0), p_dedupe_key,
                tidebase.now() + coalesce(p_delay_ms, 0) * interval '1 millisecond', coalesce(p_max_attempts, 1),
                coalesce(p_backoff_ms, 1000), p_deadline, coalesce(p_webhooks, '[]'))
        ON CONFLICT DO NOTHING
        RETURNING * INTO run;
        IF FOUND THEN
            INSERT INTO tidebase.events (run_id, seq, type, payload)
            VALUES (p_id, 1, 'run.created',
                    jsonb_build_object('workflowName', p_workflow, 'input', run.input, 'queue', p_queue,
                                       'availableAt', run.available_at, 'dedupeKey', p_dedupe_key));
            PERFORM tidebase.ring(p_id);
            PERFORM pg_notify('tidebase_queues', p_queue);
            created := true;
            RETURN;
        END IF;
        SELECT * INTO run FROM tidebase.runs WHERE id = p_id;
        IF FOUND THEN
            IF run.workflow <> p_workflow THEN
                RAISE EXCEPTION 'run % belongs to workflow %, not %', p_id, run.workflow, p_workflow
                    USING ERRCODE = 'TB005', DETAIL = 'workflow';
            END IF;
            created := false;
            RETURN;
        END IF;
        -- the duplicate we collided with finished in between: look again
    END LOOP;
    RAISE EXCEPTION 'enqueue of % on queue % kept colliding with a finishing duplicate', p_dedupe_key, p_queue
        USING ERRCODE = 'TB009';
END
$$;

-- Claims up to p_limit due runs of the given queues (and workflows) for p_owner. Per queue, in sorted order, the
-- queue's config row is locked first, so caps are counted and spent by one claimer at a time; runs are taken with
-- SKIP LOCKED, get a new fencing token and lease, and their open recovery record (if any) is marked resumed.
CREATE FUNCTION tidebase.claim_runs(
    p_owner text, p_queues text[], p_workflows text[], p_limit integer, p_lease_ms integer
) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    q text;
    c tidebase.queue_config%ROWTYPE;
    r tidebase.runs%ROWTYPE;
    v_left integer := p_limit;
    v_n integer;
    v_running integer;
    v_claimed integer;
    v_now timestamptz := tidebase.now();
BEGIN
    FOR q IN SELECT DISTINCT x FROM unnest(p_queues) AS x ORDER BY x LOOP
        EXIT WHEN v_left <= 0;
        INSERT INTO tidebase.queue_config (queue) VALUES (q) ON CONFLICT DO NOTHING;
        SELECT * INTO c FROM tidebase.queue_config WHERE queue = q FOR UPDATE;
        CONTINUE WHEN c.paused;
        v_n := v_left;
        IF c.concurrency IS NOT NULL THEN
            SELECT count(*) INTO v_running FROM tidebase.runs WHERE queue = q AND status = 'running';
            v_n := least(v_n, c.concurrency - v_running);
        END IF;
        IF c.rate_limit IS NOT NULL THEN
            IF c.window_start IS NULL OR v_now >= c.window_start + c.rate_window_ms * interval '1 millisecond' THEN
                c.window_start := v_now;
                c.window_count := 0;
            END IF;
            v_n := least(v_n, c.rate_limit - c.window_count);
        END IF;
        CONTINUE WHEN v_n <= 0;
        v_claimed := 0;
        FOR r IN
            UPDATE tidebase.runs
               SET status = 'running', lease_owner = p_owner, fencing_token = fencing_token + 1,
                   lease_ms = coalesce(p_lease_ms, lease_ms),
                   lease_expires_at = v_now + coalesce(p_lease_ms, lease_ms) * interval '1 millisecond',
                   attempt = attempt + 1, event_seq = event_seq + 1, updated_at = v_now,
                   started_at = coalesce(started_at, v_now)
             WHERE id IN (SELECT id FROM tidebase.runs
                           WHERE status = 'queued' AND queue = q AND available_at <= v_now
                             AND (p_workflows IS NULL OR workflow = ANY (p_workflows))
                           ORDER BY priority DESC, available_at, id
                           LIMIT v_n
                             FOR UPDATE SKIP LOCKED)
            RETURNING *
        LOOP
            INSERT INTO tidebase.events (run_id, seq, type, payload)
            VALUES (r.id, r.event_seq, 'run.started',
                    jsonb_build_object('leaseOwner', p_owner, 'attempt', r.attempt, 'fencingToken', r.fencing_token,
                                       'queue', q));
            PERFORM tidebase.ring(r.id);
            UPDATE tidebase.recoveries
               SET outcome = 'resumed', resumed_by = p_owner, resumed_at = v_now, resumed_token = r.fencing_token
             WHERE run_id = r.id AND outcome = 'requeued';
            v_claimed := v_claimed + 1;
            RETURN NEXT r;
        END LOOP;
        UPDATE tidebase.queue_config
           SET window_start = c.window_start, window_count = c.window_count + v_claimed
         WHERE queue = q AND c.rate_limit IS NOT NULL;
        v_left := v_left - v_claimed;
    END LOOP;
END
$$;

-- Hands a claimed run back to its queue (a worker shutting down before the run finished), fenced by the token.
CREATE FUNCTION tidebase.release_run(p_id text, p_token bigint, p_reason text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_id, p_token, 1);
BEGIN
    UPDATE tidebase.runs
       SET status = CASE WHEN queue IS NULL THEN 'pending' ELSE 'queued' END, available_at = tidebase.now(),
           lease_owner = NULL, lease_expires_at = NULL, updated_at = tidebase.now()
     WHERE id = p_id;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_id, v_seq, 'run.released', jsonb_build_object('reason', p_reason));
END
$$;

-- Sets (upserts) a queue's caps. NULL concurrency or rate_limit means unlimited.
CREATE FUNCTION tidebase.configure_queue(
    p_queue text, p_concurrency integer, p_rate_limit integer, p_rate_window_ms integer, p_paused boolean
) RETURNS SETOF tidebase.queue_config
LANGUAGE sql AS $$
    INSERT INTO tidebase.queue_config (queue, concurrency, rate_limit, rate_window_ms, paused)
    VALUES (p_queue, p_concurrency, p_rate_limit, coalesce(p_rate_window_ms, 1000), coalesce(p_paused, false))
    ON CONFLICT (queue) DO UPDATE
       SET concurrency = excluded.concurrency, rate_limit = excluded.rate_limit,
           rate_window_ms = excluded.rate_window_ms, paused = excluded.paused, updated_at = tidebase.now()
    RETURNING *
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Failure with retries (replaces version 1; same signature).

-- Ends the attempt under the holder's token. A queued run with attempts left goes back to its queue after
-- retry_backoff * 2^(failures) (capped at one hour) and appends run.retry_scheduled; otherwise the run is failed
-- (failure class `max_retries` for a queued run that used its attempts) or parked in manual_review when one of its
-- steps is parked. Clears the lease.
CREATE OR REPLACE FUNCTION tidebase.fail_run(p_id text, p_token bigint, p_error jsonb, p_failure_class text)
RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_id, p_token, 1);
    v_parked boolean;
    r tidebase.runs%ROWTYPE;
    v_class text;
    v_delay interval;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_id;
    SELECT EXISTS (SELECT 1 FROM tidebase.steps WHERE run_id = p_id AND status = 'manual_review') INTO v_parked;
    IF NOT v_parked AND r.queue IS NOT NULL AND r.failures + 1 < r.max_attempts THEN
        v_delay := least(r.retry_backoff_ms * power(2, r.failures), 3600000) * interval '1 millisecond';
        INSERT INTO tidebase.events (run_id, seq, type, payload)
        VALUES (p_id, v_seq, 'run.retry_scheduled',
                jsonb_build_object('error', p_error, 'failures', r.failures + 1, 'maxAttempts', r.max_attempts,
                                   'availableAt', tidebase.now() + v_delay));
        RETURN QUERY
        UPDATE tidebase.runs
           SET status = 'queued', failures = failures + 1, error = p_error, available_at = tidebase.now() + v_delay,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = tidebase.now()
         WHERE id = p_id
        RETURNING *;
        RETURN;
    END IF;
    v_class := CASE WHEN v_parked THEN 'manual_review'
                    WHEN r.queue IS NOT NULL THEN 'max_retries'
                    ELSE p_failure_class END;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_id, v_seq, 'run.failed', jsonb_build_object('error', p_error, 'failureClass', v_class));
    RETURN QUERY
    UPDATE tidebase.runs
       SET status = CASE WHEN v_parked THEN 'manual_review' ELSE 'failed' END,
           error = p_error, failure_class = v_class,
           failures = failures + CASE WHEN v_parked THEN 0 ELSE 1 END,
           lease_owner = NULL, lease_expires_at = NULL, updated_at = tidebase.now()
     WHERE id = p_id
    RETURNING *;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Cancellation with cascade (replaces version 1; same signature).

-- Cancels a run that is not terminal, then its pending gates (status `canceled`, waiters woken) and its non-terminal
-- child runs, recursively, with the same reason and actor. Idempotent: a cancelled run is returned unchanged (first
-- reason kept). A completed run raises TB007. Locks go parent first, then its gates, then each child (in id order),
-- the same order as every other writer.
CREATE OR REPLACE FUNCTION tidebase.cancel_run(p_id text, p_reason text, p_actor text) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    g tidebase.gates%ROWTYPE;
    c record;
    v_seq bigint;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_id USING ERRCODE = 'TB001';
    ELSIF r.status = 'completed' THEN
        RAISE EXCEPTION 'run % is already completed', p_id USING ERRCODE = 'TB007';
    ELSIF r.status = 'cancelled' THEN
        RETURN NEXT r;
        RETURN;
    END IF;
    UPDATE tidebase.runs
       SET status = 'cancelled', cancel_reason = p_reason, cancel_actor = p_actor, cancelled_at = tidebase.now(),
           completed_at = tidebase.now(), lease_owner = NULL, lease_expires_at = NULL,
           event_seq = event_seq + 1, updated_at = tidebase.now()
     WHERE id = p_id
    RETURNING * INTO r;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_id, r.event_seq, 'run.cancelled', jsonb_build_object('reason', p_reason, 'actor', p_actor));
    PERFORM tidebase.ring(p_id);
    UPDATE tidebase.recoveries SET outcome = 'cancelled' WHERE run_id = p_id AND outcome = 'requeued';
    FOR g IN
        UPDATE tidebase.gates
           SET status = 'canceled', decision = 'canceled', actor = p_actor,
               payload = jsonb_build_object('reason', p_reason), resolved_at = tidebase.now(),
               updated_at = tidebase.now()
         WHERE run_id = p_id AND status = 'pending'
        RETURNING *
    LOOP
        v_seq := tidebase.next_seq(p_id);
        INSERT INTO tidebase.events (run_id, seq, type, payload)
        VALUES (p_id, v_seq, 'gate.resolved',
                jsonb_build_object('gateId', g.id, 'name', g.name, 'decision', 'canceled', 'actor', p_actor,
                                   'payload', g.payload));
        PERFORM pg_notify('tidebase_gates', g.id);
    END LOOP;
    FOR c IN SELECT id FROM tidebase.runs
              WHERE parent_id = p_id AND status NOT IN ('completed', 'cancelled', 'failed') ORDER BY id LOOP
        BEGIN
            PERFORM tidebase.cancel_run(c.id, p_reason, p_actor);
        EXCEPTION WHEN SQLSTATE 'TB007' THEN
            NULL;  -- the child completed between the scan and its lock: nothing to cancel
        END;
    END LOOP;
    RETURN NEXT r;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Gate resolution that wakes queued runs (replaces version 2; same signature).

-- Resolves a pending gate exactly once (losers get TB012 with the winning decision in DETAIL; terminal runs refuse).
-- A queued run (one with a queue) that was suspended at its gates and has none pending any more goes back to its
-- queue, so a worker resumes it; a run invoked directly is resumed by invoking it again, as before.
CREATE OR REPLACE FUNCTION tidebase.resolve_gate(
    p_gate_id text, p_decision text, p_actor text, p_payload jsonb
) RETURNS SETOF tidebase.gates
LANGUAGE plpgsql AS $$
DECLARE
    g tidebase.gates%ROWTYPE;
    v_seq bigint;
BEGIN
    SELECT * INTO g FROM tidebase.gates WHERE id = p_gate_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gate % not found', p_gate_id USING ERRCODE = 'TB011';
    END IF;
    PERFORM tidebase.lock_run(g.run_id, NULL);
    UPDATE tidebase.gates
       SET status = p_decision, decision = p_decision, actor = p_actor, payload = coalesce(p_payload, '{}'),
           resolved_at = tidebase.now(), updated_at = tidebase.now()
     WHERE id = p_gate_id AND status = 'pending'
    RETURNING * INTO g;
    IF NOT FOUND THEN
        SELECT * INTO g FROM tidebase.gates WHERE id = p_gate_id;
        RAISE EXCEPTION 'gate % is already resolved (%)', p_gate_id, g.decision
            USING ERRCODE = 'TB012', DETAIL = g.decision, HINT = coalesce(g.actor, '');
    END IF;
    v_seq := tidebase.next_seq(g.run_id);
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (g.run_id, v_seq, 'gate.resolved',
            jsonb_build_object('gateId', g.id, 'name', g.name, 'decision', g.decision, 'actor', g.actor,
                               'payload', g.payload));
    PERFORM pg_notify('tidebase_gates', g.id);
    UPDATE tidebase.runs SET status = 'queued', available_at = tidebase.now(), updated_at = tidebase.now()
     WHERE id = g.run_id AND status = 'waiting' AND queue IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM tidebase.gates WHERE run_id = g.run_id AND status = 'pending');
    IF FOUND THEN
        PERFORM pg_notify('tidebase_queues', (SELECT queue FROM tidebase.runs WHERE id = g.run_id));
    END IF;
    RETURN NEXT g;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- The reconciler's transitions. Each is one short transaction over a bounded batch found through a partial index;
-- each row is re-checked under its lock (FOR UPDATE re-evaluates the condition on the newest row version) and rows
-- another session holds are skipped, not waited for.

-- Moves up to p_limit runs whose lease expired back to their queue and records a recovery for each.
CREATE FUNCTION tidebase.recover_expired(p_actor text, p_limit integer) RETURNS SETOF tidebase.recoveries
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    v tidebase.recoveries%ROWTYPE;
    v_now timestamptz := tidebase.now();  -- a value, not a volatile call, so the index range is bounded by it
    v_steps jsonb;
BEGIN
    FOR r IN SELECT * FROM tidebase.runs
              WHERE status = 'running' AND queue IS NOT NULL AND lease_expires_at < v_now
              ORDER BY lease_expires_at
              LIMIT p_limit
                FOR UPDATE SKIP LOCKED LOOP
        SELECT coalesce(jsonb_agg(key ORDER BY key), '[]') INTO v_steps
          FROM tidebase.steps WHERE run_id = r.id AND status = 'running';
        UPDATE tidebase.runs
           SET status = 'queued', available_at = v_now, lease_owner = NULL, lease_expires_at = NULL,
               event_seq = event_seq + 1, updated_at = v_now
         WHERE id = r.id;
        INSERT INTO tidebase.recoveries (run_id, id, reason, detected_by, detected_at, previous_owner, previous_token,
                                         interrupted_steps)
        VALUES (r.id, tidebase.new_id('rec_'), 'lease_expired', p_actor, v_now, r.lease_owner, r.fencing_token,
                v_steps)
        RETURNING * INTO v;
        INSERT INTO tidebase.events (run_id, seq, type, payload)
        VALUES (r.id, r.event_seq + 1, 'run.recovering',
                jsonb_build_object('recoveryId', v.id, 'reason', 'lease_expired', 'previousOwner', r.lease_owner,
                                   'previousToken', r.fencing_token, 'interruptedSteps', v_steps,
                                   'detectedBy', p_actor));
        PERFORM tidebase.ring(r.id);
        PERFORM pg_notify('tidebase_queues', r.queue);
        RETURN NEXT v;
    END LOOP;
END
$$;

-- Cancels up to p_limit runs past their deadline, with reason `deadline`. Returns their ids.
CREATE FUNCTION tidebase.cancel_overdue(p_actor text, p_limit integer) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    v_id text;
    v_now timestamptz := tidebase.now();  -- a value, not a volatile call, so the index range is bounded by it
BEGIN
    FOR v_id IN SELECT id FROM tidebase.runs
                 WHERE deadline_at IS NOT NULL AND status IN ('pending', 'queued', 'running', 'waiting')
                   AND deadline_at < v_now
                 ORDER BY deadline_at
                 LIMIT p_limit
                   FOR UPDATE SKIP LOCKED LOOP
        PERFORM tidebase.cancel_run(v_id, 'deadline', p_actor);
        RETURN NEXT v_id;
    END LOOP;
END
$$;

-- Fires schedule p_name for fire time p_fire_at, once: only when its next_fire_at still equals p_fire_at (a
-- competing reconciler that fired it first moved it on). Records the fire times p_missed as `missed`, enqueues one
-- run for p_fire_at (deduplicated by schedule and fire time), and moves next_fire_at to p_next. Returns the run id, or
-- NULL when this fire was already taken.
CREATE FUNCTION tidebase.fire_schedule(
    p_name text, p_fire_at timestamptz, p_missed timestamptz[], p_next timestamptz, p_actor text, p_lease_ms integer
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    s tidebase.schedules%ROWTYPE;
    v_id text;
BEGIN
    UPDATE tidebase.schedules
       SET next_fire_at = p_next, last_fire_at = p_fire_at, updated_at = tidebase.now()
     WHERE name = p_name AND enabled AND next_fire_at = coalesce(p_missed[1], p_fire_at)
    RETURNING * INTO s;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO tidebase.schedule_fires (schedule, fire_at, status, fired_by)
    SELECT p_name, m, 'missed', p_actor FROM unnest(p_missed) AS m
    ON CONFLICT DO NOTHING;
    v_id := 'sched_' || md5(p_name || '@' || extract(epoch FROM p_fire_at)::text);
    PERFORM tidebase.enqueue_run(v_id, s.workflow, s.input, s.input_hash,
                                 jsonb_build_object('schedule', p_name, 'fireAt', p_fire_at), s.queue, s.priority,
                                 NULL, 0, s.max_attempts, 1000, NULL, p_lease_ms, '[]');
    INSERT INTO tidebase.schedule_fires (schedule, fire_at, status, run_id, fired_by)
    VALUES (p_name, p_fire_at, 'enqueued', v_id, p_actor)
    ON CONFLICT DO NOTHING;
    RETURN v_id;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Outbox delivery bookkeeping.

-- Claims up to p_limit due deliveries for one dispatcher: each is pushed p_hold_ms into the future first, so a
-- dispatcher that dies mid-delivery leaves it to be retried, and no other dispatcher takes it meanwhile.
CREATE FUNCTION tidebase.claim_deliveries(p_limit integer, p_hold_ms integer) RETURNS SETOF tidebase.outbox
LANGUAGE sql AS $$
    UPDATE tidebase.outbox
       SET next_attempt_at = tidebase.now() + p_hold_ms * interval '1 millisecond', attempts = attempts + 1
     WHERE id IN (SELECT id FROM tidebase.outbox
                   WHERE status = 'pending' AND next_attempt_at <= tidebase.now()
                   ORDER BY next_attempt_at, id
                   LIMIT p_limit
                     FOR UPDATE SKIP LOCKED)
    RETURNING *
$$;

-- Records one delivery attempt and its outcome: delivered, retried after backoff, or dead after max_attempts.
CREATE FUNCTION tidebase.record_delivery(
    p_id bigint, p_attempt integer, p_started_at timestamptz, p_duration_ms integer, p_status_code integer,
    p_error text, p_ok boolean, p_backoff_ms integer
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tidebase.outbox_attempts (outbox_id, attempt, started_at, duration_ms, status_code, error, ok)
    VALUES (p_id, p_attempt, p_started_at, p_duration_ms, p_status_code, p_error, p_ok)
    ON CONFLICT DO NOTHING;
    UPDATE tidebase.outbox
       SET status = CASE WHEN p_ok THEN 'delivered' WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
           delivered_at = CASE WHEN p_ok THEN tidebase.now() END,
           last_error = CASE WHEN p_ok THEN NULL ELSE p_error END,
           next_attempt_at = tidebase.now()
                             + least(p_backoff_ms * power(2, attempts - 1), 3600000) * interval '1 millisecond'
     WHERE id = p_id;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Gate channels.
--
-- A gate may carry webhook channels of its own ({url, secret?, events?}, stored in gates.channels; secrets are never
-- returned). The gate.created delivery to those channels and to the run's matching webhooks is the one place, other
-- than the answer to the call that created the gate, that carries the resolve token: approvers outside the system
-- receive it there. The token exists in plain text only in that outbox row's body (a delivery body must be
-- byte-identical on every retry); the gates table keeps only its SHA-256. The run trigger of 0004 therefore leaves
-- gate.created to tidebase.begin_gate_v2, and gate.resolved also reaches the gate's own channels (without the token).
-- Opens the gate like tidebase.begin_gate and, when this call created it, queues its gate.created deliveries (the
-- run's webhooks and the gate's channels whose filters match), carrying the resolve token.
CREATE FUNCTION tidebase.begin_gate_v2(
    p_run_id text, p_token bigint, p_name text, p_id text, p_prompt text, p_data jsonb, p_token_hash text,
    p_capability jsonb, p_channels jsonb, p_resolve_token text, OUT gate tidebase.gates, OUT created boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    b record;
BEGIN
    SELECT * INTO b
      FROM tidebase.begin_gate(p_run_id, p_token, p_name, p_id, p_prompt, p_data, p_token_hash, p_capability,
                               p_channels);
    gate := b.gate;
    created := b.created;
    IF created THEN
        PERFORM tidebase.queue_webhooks(
            p_run_id, (SELECT webhooks FROM tidebase.runs WHERE id = p_run_id) || gate.channels, 'gate.created',
            jsonb_build_object('gateId', gate.id, 'name', gate.name, 'prompt', gate.prompt, 'data', gate.data,
                               'resolveToken', p_resolve_token));
    END IF;
END
$$;

-- Delivers gate.resolved to the gate's own channels (the run's webhooks get it through the run trigger).
CREATE FUNCTION tidebase.gates_resolved_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tidebase.queue_webhooks(NEW.run_id, NEW.channels, 'gate.resolved',
                                    jsonb_build_object('gateId', NEW.id, 'name', NEW.name, 'decision', NEW.decision,
                                                       'actor', NEW.actor, 'payload', NEW.payload));
    RETURN NULL;
END
$$;
CREATE TRIGGER gates_resolved_webhooks AFTER UPDATE OF status ON tidebase.gates
    FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending' AND NEW.channels <> '[]'::jsonb)
    EXECUTE FUNCTION tidebase.gates_resolved_webhooks();
