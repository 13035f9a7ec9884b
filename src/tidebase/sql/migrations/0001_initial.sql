-- Tidebase schema, version 1: runs, step checkpoints, the per-run event log and live state.
--
-- The data model in prose. A *run* is one execution of a named workflow, identified by a client-chosen or generated
-- id. It carries its input (and the SHA-256 of the input's canonical JSON, so a resume with other input is refused),
-- its status, its result or error, and the lease: the owner, a *fencing token* that grows by one on every
-- acquisition, and an expiry computed with the database clock. Every write made on behalf of a lease holder names its
-- token, and the statement that writes compares it with the run row's token while holding the row lock, so a holder
-- whose lease was taken over (a zombie) is refused before it changes anything.
--
-- A *step* is one checkpoint: (run_id, key) where the key is the step name plus its occurrence in the run
-- (`search`, `search#2`, ...). Completion is a conditional upsert: a completed step is never overwritten, and its
-- stored input hash is compared in the same statement. A side-effecting step first commits a `running` marker with
-- its resume contract; a marker found on resume without a completion tells the next holder that the step was
-- interrupted, and the contract decides whether it may run again or must be parked for review.
--
-- *Events* are the per-run log: `seq` is taken from the run row's counter while the row is locked by the writing
-- transaction, so writers of one run serialize, each transaction's events commit in seq order, and the log is
-- gap-free. Each appending transaction sends a NOTIFY on channel `tidebase_events` with the run id (while anyone
-- listens, see tidebase.ring); Postgres delivers it only when that transaction commits.
--
-- *State* is a set of named streams per run; each write stores a new gap-free version (value, and the patch for a
-- merge) and moves the stream's current value, under the stream row's lock, in the writer's transaction.
--
-- Custom SQLSTATEs (class TB) carry refusals to the client, which maps them to typed exceptions in one place:
--   TB001 run not found          TB002 lease held by another owner   TB003 lease lost (stale token)
--   TB004 run cancelled          TB005 input or workflow mismatch     TB006 step parked for manual review
--   TB007 run already completed  TB008 step not found                TB009 conflict (state does not allow it)
--   TB010 state not found
--
-- Every time decision uses tidebase.now(): the database clock, which a test session can pin with
-- `SET tidebase.fake_now = '...'`. Every table that belongs to a run leads its primary key with run_id.

CREATE SCHEMA IF NOT EXISTS tidebase;

CREATE FUNCTION tidebase.now() RETURNS timestamptz
LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(nullif(current_setting('tidebase.fake_now', true), '')::timestamptz, clock_timestamp())
$$;

CREATE FUNCTION tidebase.new_id(prefix text) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT prefix || replace(gen_random_uuid()::text, '-', '')
$$;

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
    CHECK (length(id) BETWEEN 1 AND 128),
    CHECK (length(workflow) BETWEEN 1 AND 512)
) WITH (fillfactor = 70);  -- room for HOT updates: each step bumps the run's event counter

CREATE INDEX runs_newest ON tidebase.runs (created_at DESC, id DESC);
CREATE INDEX runs_status_newest ON tidebase.runs (status, created_at DESC, id DESC);
CREATE INDEX runs_workflow_newest ON tidebase.runs (workflow, created_at DESC, id DESC);
CREATE INDEX runs_parent ON tidebase.runs (parent_id) WHERE parent_id IS NOT NULL;

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

-- The doorbell. Event writers notify channel `tidebase_events` (payload: the run id) only while some session listens
-- for it: a NOTIFY makes its transaction take a cluster-wide lock until its commit is flushed, which would serialize
-- every concurrent writer's commit for nobody's benefit. A listener registers its backend in tidebase.listeners before
-- it LISTENs (and must re-read the events table after that, as the table is the source of truth); rows of sessions
-- that ended are pruned at every registration.
CREATE TABLE tidebase.listeners (
    pid                 integer PRIMARY KEY,
    channel             text NOT NULL,
    since               timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION tidebase.ring(p_run_id text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('tidebase_events', p_run_id) WHERE EXISTS (SELECT 1 FROM tidebase.listeners)
$$;

CREATE FUNCTION tidebase.register_listener(p_channel text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM tidebase.listeners WHERE pid NOT IN (SELECT pid FROM pg_stat_activity);
    INSERT INTO tidebase.listeners (pid, channel) VALUES (pg_backend_pid(), p_channel)
    ON CONFLICT (pid) DO UPDATE SET channel = excluded.channel, since = now();
$$;

CREATE FUNCTION tidebase.unregister_listener() RETURNS void
LANGUAGE sql AS $$
    DELETE FROM tidebase.listeners WHERE pid = pg_backend_pid();
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Refusals. Called only on the unhappy path, after a fenced statement matched no row: it reads the run and raises the
-- error that explains why, so the hot path stays a single conditional statement. A superseded token is reported as
-- LeaseLost whatever the run's status, so a zombie always learns that it lost the lease.
CREATE FUNCTION tidebase.refuse(p_run_id text, p_token bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    ELSIF p_token IS NOT NULL AND p_token <> r.fencing_token THEN
        RAISE EXCEPTION 'lease on run % lost: token % was superseded by token %', p_run_id, p_token,
            r.fencing_token USING ERRCODE = 'TB003';
    ELSIF r.status = 'cancelled' THEN
        RAISE EXCEPTION 'run % is cancelled', p_run_id USING ERRCODE = 'TB004',
            DETAIL = coalesce(r.cancel_reason, '');
    ELSIF r.status = 'completed' THEN
        RAISE EXCEPTION 'run % is already completed', p_run_id USING ERRCODE = 'TB007';
    ELSE
        RAISE EXCEPTION 'lease on run % lost: token % is not the current holder''s (status %, token %)',
            p_run_id, p_token, r.status, r.fencing_token USING ERRCODE = 'TB003';
    END IF;
END
$$;

-- Takes the run row for a fenced write and reserves n event seqs. Returns the first reserved seq. The row lock it
-- takes serializes every writer of the run until commit, which is what makes the event log gap-free and ordered. A
-- null token means an unfenced writer (an operator or an HTTP client without a lease): only terminal states refuse it.
-- A live lease is renewed by the holder's writes; an expired one is never revived.
CREATE FUNCTION tidebase.fence(p_run_id text, p_token bigint, p_events integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    IF p_token IS NULL THEN
        UPDATE tidebase.runs SET event_seq = event_seq + p_events, updated_at = tidebase.now()
         WHERE id = p_run_id AND status NOT IN ('cancelled', 'completed')
        RETURNING event_seq INTO v_seq;
    ELSE
        UPDATE tidebase.runs
           SET event_seq = event_seq + p_events,
               updated_at = tidebase.now(),
               lease_expires_at = CASE WHEN lease_expires_at > tidebase.now()
                                       THEN tidebase.now() + lease_ms * interval '1 millisecond'
                                       ELSE lease_expires_at END
         WHERE id = p_run_id AND fencing_token = p_token AND status = 'running'
        RETURNING event_seq INTO v_seq;
    END IF;
    IF NOT FOUND THEN
        PERFORM tidebase.refuse(p_run_id, p_token);
    END IF;
    IF p_events > 0 THEN
        PERFORM tidebase.ring(p_run_id);
    END IF;
    RETURN v_seq - p_events + 1;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Runs.

-- Creates the run if it does not exist (appending run.created as seq 1), then returns it. An existing run with
-- another workflow, or (when p_check_input) another input hash, raises TB005 and writes nothing.
CREATE FUNCTION tidebase.create_run(
    p_id text, p_workflow text, p_input jsonb, p_input_hash text, p_check_input boolean,
    p_metadata jsonb, p_parent_id text, p_lease_ms integer
) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
BEGIN
    INSERT INTO tidebase.runs (id, workflow, input, input_hash, metadata, parent_id, lease_ms, event_seq)
    VALUES (p_id, p_workflow, coalesce(p_input, '{}'), p_input_hash, coalesce(p_metadata, '{}'), p_parent_id,
            coalesce(p_lease_ms, 30000), 1)
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO r;
    IF FOUND THEN
        INSERT INTO tidebase.events (run_id, seq, type, payload)
        VALUES (p_id, 1, 'run.created', jsonb_build_object('workflowName', p_workflow, 'input', r.input));
        PERFORM tidebase.ring(p_id);
        RETURN NEXT r;
        RETURN;
    END IF;
    SELECT * INTO r FROM tidebase.runs WHERE id = p_id;
    IF r.workflow <> p_workflow THEN
        RAISE EXCEPTION 'run % belongs to workflow %, not %', p_id, r.workflow, p_workflow
            USING ERRCODE = 'TB005', DETAIL = 'workflow';
    END IF;
    IF p_check_input AND r.input_hash <> p_input_hash THEN
        RAISE EXCEPTION 'run % was created with another input (hash % , now %)', p_id, r.input_hash, p_input_hash
            USING ERRCODE = 'TB005', DETAIL = 'input';
    END IF;
    RETURN NEXT r;
END
$$;

-- Takes the lease of a run for p_owner: a new fencing token, attempt + 1, expiry = now + lease. Refuses a live lease
-- held by another owner (TB002) and a cancelled run (TB004). A completed run is returned unchanged, with no lease.
CREATE FUNCTION tidebase.acquire_run(p_id text, p_owner text, p_lease_ms integer) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_id USING ERRCODE = 'TB001';
    END IF;
    IF r.status = 'cancelled' THEN
        RAISE EXCEPTION 'run % is cancelled', p_id USING ERRCODE = 'TB004', DETAIL = coalesce(r.cancel_reason, '');
    END IF;
    IF r.status = 'completed' THEN
        RETURN NEXT r;
        RETURN;
    END IF;
    IF r.status = 'running' AND r.lease_expires_at > tidebase.now() AND r.lease_owner IS DISTINCT FROM p_owner THEN
        RAISE EXCEPTION 'run % is leased by %', p_id, r.lease_owner
            USING ERRCODE = 'TB002', DETAIL = coalesce(r.lease_owner, ''),
                  HINT = to_char(r.lease_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    END IF;
    UPDATE tidebase.runs
       SET status = 'running', lease_owner = p_owner, fencing_token = fencing_token + 1,
           lease_ms = coalesce(p_lease_ms, lease_ms),
           lease_expires_at = tidebase.now() + coalesce(p_lease_ms, lease_ms) * interval '1 millisecond',
           attempt = attempt + 1, event_seq = event_seq + 1, updated_at = tidebase.now(),
           started_at = coalesce(started_at, tidebase.now())
     WHERE id = p_id
    RETURNING * INTO r;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_id, r.event_seq, 'run.started',
            jsonb_build_object('leaseOwner', p_owner, 'attempt', r.attempt, 'fencingToken', r.fencing_token));
    PERFORM tidebase.ring(p_id);
    RETURN NEXT r;
END
$$;

-- Extends a live lease held under p_token. Never revives an expired lease. Returns the new expiry, or raises.
CREATE FUNCTION tidebase.renew_lease(p_id text, p_token bigint) RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    v_expires timestamptz;
BEGIN
    UPDATE tidebase.runs SET lease_expires_at = tidebase.now() + lease_ms * interval '1 millisecond'
     WHERE id = p_id AND fencing_token = p_token AND status = 'running' AND lease_expires_at > tidebase.now()
    RETURNING lease_expires_at INTO v_expires;
    IF NOT FOUND THEN
        PERFORM tidebase.refuse(p_id, p_token);
        RAISE EXCEPTION 'lease on run % expired before it was renewed', p_id USING ERRCODE = 'TB003';
    END IF;
    UPDATE tidebase.steps SET lease_expires_at = v_expires
     WHERE run_id = p_id AND status = 'running' AND lease_token = p_token;
    RETURN v_expires;
END
$$;

-- Ends the run as completed under the holder's token. Clears the lease.
CREATE FUNCTION tidebase.complete_run(p_id text, p_token bigint, p_result jsonb) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_id, p_token, 1);
BEGIN
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_id, v_seq, 'run.completed', jsonb_build_object('result', p_result));
    RETURN QUERY
    UPDATE tidebase.runs
       SET status = 'completed', result = p_result, error = NULL, failure_class = NULL, lease_owner = NULL,
           lease_expires_at = NULL, completed_at = tidebase.now(), updated_at = tidebase.now()
     WHERE id = p_id
    RETURNING *;
END
$$;

-- Ends the run as failed under the holder's token, or as manual_review when one of its steps is parked. Clears the
-- lease.
CREATE FUNCTION tidebase.fail_run(p_id text, p_token bigint, p_error jsonb, p_failure_class text)
RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_id, p_token, 1);
    v_parked boolean;
BEGIN
    SELECT EXISTS (SELECT 1 FROM tidebase.steps WHERE run_id = p_id AND status = 'manual_review') INTO v_parked;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_id, v_seq, 'run.failed',
            jsonb_build_object('error', p_error,
                               'failureClass', CASE WHEN v_parked THEN 'manual_review' ELSE p_failure_class END));
    RETURN QUERY
    UPDATE tidebase.runs
       SET status = CASE WHEN v_parked THEN 'manual_review' ELSE 'failed' END,
           error = p_error,
           failure_class = CASE WHEN v_parked THEN 'manual_review' ELSE p_failure_class END,
           lease_owner = NULL, lease_expires_at = NULL, updated_at = tidebase.now()
     WHERE id = p_id
    RETURNING *;
END
$$;

-- Cancels a run that is not terminal. Idempotent: a cancelled run is returned unchanged (first reason kept). A
-- completed run raises TB007. The status change happens under the run row lock, so it is linearized with every
-- fenced write: once it commits, no step, state or completion write of the run can succeed.
CREATE FUNCTION tidebase.cancel_run(p_id text, p_reason text, p_actor text) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
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
    RETURN NEXT r;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Steps.

-- Explains, by raising, why a step completion could not be applied: the stored checkpoint has another input hash
-- (TB005), is parked for review (TB006), or is already completed (TB009). The completion statement (queries.sql,
-- complete_step) calls it in the same statement, so the error also rolls back the event counter it advanced.
CREATE FUNCTION tidebase.step_conflict(p_run_id text, p_key text, p_input_hash text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    s tidebase.steps%ROWTYPE;
BEGIN
    SELECT * INTO s FROM tidebase.steps WHERE run_id = p_run_id AND key = p_key;
    IF s.input_hash <> p_input_hash THEN
        RAISE EXCEPTION 'step % of run % was checkpointed for other input', p_key, p_run_id
            USING ERRCODE = 'TB005', DETAIL = 'step';
    ELSIF s.status = 'manual_review' THEN
        RAISE EXCEPTION 'step % of run % is parked for manual review', p_key, p_run_id USING ERRCODE = 'TB006';
    END IF;
    RAISE EXCEPTION 'step % of run % is already completed', p_key, p_run_id USING ERRCODE = 'TB009';
END
$$;

-- Commits the durable `running` marker of a step before its function runs (side-effecting steps, retried attempts).
-- Returns the attempt number. Refuses a completed step (TB009), another input hash (TB005), a parked step (TB006).
CREATE FUNCTION tidebase.start_step(
    p_run_id text, p_token bigint, p_key text, p_name text, p_occurrence integer, p_input_hash text,
    p_contract jsonb
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
    s tidebase.steps%ROWTYPE;
BEGIN
    SELECT * INTO s FROM tidebase.steps WHERE run_id = p_run_id AND key = p_key FOR UPDATE;
    IF FOUND THEN
        IF s.input_hash <> p_input_hash THEN
            RAISE EXCEPTION 'step % of run % was checkpointed for other input', p_key, p_run_id
                USING ERRCODE = 'TB005', DETAIL = 'step';
        ELSIF s.status = 'completed' THEN
            RAISE EXCEPTION 'step % of run % is already completed', p_key, p_run_id USING ERRCODE = 'TB009';
        ELSIF s.status = 'manual_review' THEN
            RAISE EXCEPTION 'step % of run % is parked for manual review', p_key, p_run_id USING ERRCODE = 'TB006';
        END IF;
        UPDATE tidebase.steps
           SET status = 'running', attempt = attempt + 1, contract = p_contract,
               lease_owner = (SELECT lease_owner FROM tidebase.runs WHERE id = p_run_id), lease_token = p_token,
               lease_expires_at = (SELECT lease_expires_at FROM tidebase.runs WHERE id = p_run_id),
               started_at = coalesce(started_at, tidebase.now()), updated_at = tidebase.now()
         WHERE run_id = p_run_id AND key = p_key
        RETURNING * INTO s;
    ELSE
        INSERT INTO tidebase.steps (run_id, key, id, name, occurrence, input_hash, contract, status, attempt,
                                    lease_owner, lease_token, lease_expires_at, started_at)
        SELECT p_run_id, p_key, tidebase.new_id('step_'), p_name, p_occurrence, p_input_hash, p_contract, 'running',
               1, r.lease_owner, p_token, r.lease_expires_at, tidebase.now()
          FROM tidebase.runs r WHERE r.id = p_run_id
        RETURNING * INTO s;
    END IF;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'step.started',
            jsonb_build_object('stepId', s.id, 'name', p_key, 'attempt', s.attempt, 'resumeContract', p_contract));
    RETURN s.attempt;
END
$$;

-- Records a failed attempt of a step: status failed_retryable, failed or manual_review, with the error and the
-- decision. Creates the step row when the attempt had no durable marker (a pure step). Never touches a completed step.
CREATE FUNCTION tidebase.fail_step(
    p_run_id text, p_token bigint, p_key text, p_name text, p_occurrence integer, p_input_hash text,
    p_contract jsonb, p_attempt integer, p_status text, p_decision text, p_error jsonb
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
    v_id text;
BEGIN
    INSERT INTO tidebase.steps AS t (run_id, key, id, name, occurrence, input_hash, contract, status, error,
                                     resume_decision, attempt, started_at)
    VALUES (p_run_id, p_key, tidebase.new_id('step_'), p_name, p_occurrence, p_input_hash, p_contract, p_status,
            p_error, p_decision, p_attempt, tidebase.now())
    ON CONFLICT (run_id, key) DO UPDATE
       SET status = excluded.status, error = excluded.error, resume_decision = excluded.resume_decision,
           attempt = excluded.attempt, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
           updated_at = tidebase.now()
     WHERE t.status <> 'completed' AND t.input_hash = excluded.input_hash
    RETURNING id INTO v_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step % of run % cannot fail: it is completed or was checkpointed for other input',
            p_key, p_run_id USING ERRCODE = 'TB009';
    END IF;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'step.failed',
            jsonb_build_object('stepId', v_id, 'name', p_key, 'attempt', p_attempt, 'status', p_status,
                               'retryable', p_status = 'failed_retryable', 'resumeDecision', p_decision,
                               'resumeContract', p_contract, 'error', p_error));
    RETURN v_id;
END
$$;

-- Operator actions on a parked step; no lease is needed. release: the step may run again (failed_retryable).
-- skip: the step is completed with the operator's output and is replayed from it. Either appends step.reviewed, and
-- a run left with no parked step moves from manual_review to pending so that it can be resumed.
CREATE FUNCTION tidebase.review_step(
    p_run_id text, p_key text, p_action text, p_output jsonb, p_actor text, p_reason text
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, NULL, 1);
    s tidebase.steps%ROWTYPE;
BEGIN
    SELECT * INTO s FROM tidebase.steps WHERE run_id = p_run_id AND key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step % of run % not found', p_key, p_run_id USING ERRCODE = 'TB008';
    ELSIF s.status <> 'manual_review' THEN
        RAISE EXCEPTION 'step % of run % is not parked for review (it is %)', p_key, p_run_id, s.status
            USING ERRCODE = 'TB009';
    END IF;
    UPDATE tidebase.steps
       SET status = CASE p_action WHEN 'skip' THEN 'completed' ELSE 'failed_retryable' END,
           output = CASE p_action WHEN 'skip' THEN p_output ELSE output END,
           completed_at = CASE p_action WHEN 'skip' THEN tidebase.now() ELSE completed_at END,
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = tidebase.now()
     WHERE run_id = p_run_id AND key = p_key;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'step.reviewed',
            jsonb_build_object('stepId', s.id, 'name', p_key, 'action', p_action, 'actor', p_actor,
                               'reason', p_reason));
    UPDATE tidebase.runs SET status = 'pending', updated_at = tidebase.now()
     WHERE id = p_run_id AND status = 'manual_review'
       AND NOT EXISTS (SELECT 1 FROM tidebase.steps WHERE run_id = p_run_id AND status = 'manual_review');
    RETURN s.id;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Events and state.

-- Appends one event of the caller's own type to the run's log (fenced when a token is given).
CREATE FUNCTION tidebase.append_event(p_run_id text, p_token bigint, p_type text, p_payload jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
BEGIN
    INSERT INTO tidebase.events (run_id, seq, type, payload) VALUES (p_run_id, v_seq, p_type, p_payload);
    RETURN v_seq;
END
$$;

-- Writes a state stream: p_mode 'set' replaces the value, 'patch' merges (jsonb ||), 'save' labels the current value
-- without changing it (TB010 when the stream has no version yet), 'snapshot' sets a labelled milestone value in a
-- stream about a target (p_target_type, p_target_id). Appends the next gap-free version and one event
-- (state.updated, state.saved or snapshot.created) in the same transaction, and returns the version row.
CREATE FUNCTION tidebase.write_state(
    p_run_id text, p_token bigint, p_stream text, p_mode text, p_value jsonb, p_label text, p_reason text,
    p_importance text, p_metadata jsonb, p_created_by text, p_step_key text, p_target_type text, p_target_id text
) RETURNS SETOF tidebase.state_versions
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
    st tidebase.state_streams%ROWTYPE;
    v tidebase.state_versions%ROWTYPE;
    v_value jsonb;
BEGIN
    SELECT * INTO st FROM tidebase.state_streams WHERE run_id = p_run_id AND name = p_stream FOR UPDATE;
    IF NOT FOUND THEN
        IF p_mode = 'save' THEN
            RAISE EXCEPTION 'run % has no state in stream %', p_run_id, p_stream USING ERRCODE = 'TB010';
        END IF;
        INSERT INTO tidebase.state_streams (run_id, name, id, target_type, target_id)
        VALUES (p_run_id, p_stream, tidebase.new_id('stream_'), coalesce(p_target_type, 'run'),
                coalesce(p_target_id, p_run_id))
        RETURNING * INTO st;
    ELSIF p_mode = 'save' AND st.current_version = 0 THEN
        RAISE EXCEPTION 'run % has no state in stream %', p_run_id, p_stream USING ERRCODE = 'TB010';
    END IF;
    v_value := CASE p_mode
                   WHEN 'patch' THEN CASE WHEN st.current_version = 0 THEN p_value
                                          ELSE st.current_value || p_value END
                   WHEN 'save' THEN st.current_value
                   ELSE p_value END;
    UPDATE tidebase.state_streams
       SET current_version = current_version + 1, current_value = v_value, updated_at = tidebase.now()
     WHERE run_id = p_run_id AND name = p_stream
    RETURNING * INTO st;
    INSERT INTO tidebase.state_versions (run_id, stream, version, id, value, patch, label, reason, importance,
                                         metadata, step_key, created_by)
    VALUES (p_run_id, p_stream, st.current_version, tidebase.new_id('ver_'), v_value,
            CASE WHEN p_mode = 'patch' THEN p_value END, p_label, p_reason,
            coalesce(p_importance, CASE WHEN p_mode IN ('save', 'snapshot') THEN 'milestone' ELSE 'normal' END),
            coalesce(p_metadata, '{}'), p_step_key, p_created_by)
    RETURNING * INTO v;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq,
            CASE p_mode WHEN 'save' THEN 'state.saved' WHEN 'snapshot' THEN 'snapshot.created'
                        ELSE 'state.updated' END,
            jsonb_build_object('stream', p_stream, 'version', v.version, 'versionId', v.id, 'label', v.label)
            || CASE WHEN p_mode IN ('set', 'patch') THEN jsonb_build_object('value', v_value) ELSE '{}'::jsonb END
            || CASE WHEN p_mode = 'patch' THEN jsonb_build_object('patch', p_value) ELSE '{}'::jsonb END);
    RETURN NEXT v;
END
$$;
