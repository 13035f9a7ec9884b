-- Runs: creation, the lease (acquire, renew), and the ends of an attempt (complete, fail, suspend, cancel).
--
-- Both doors call these same functions: the library with its fencing token, the HTTP door with the token of the
-- lease owner it was given (tidebase.token_of, in 99_http_door.sql). A lease ends with the attempt that held it; the
-- step leases its holder took end with it (tidebase.end_step_leases), so a step that was running then counts as
-- interrupted for the next holder rather than locked by a holder that gave up.

-- Creates the run if it does not exist (appending run.created as its first event) and returns it with `created`. An
-- existing run with another workflow, or (when p_check_input) another input hash, raises TB005 and writes nothing;
-- otherwise it is returned unchanged (p_metadata, p_channels and p_recovery_webhook are then ignored). p_channels are
-- channel specs (tidebase.channel_entries); the run.created event lists them without secrets.
CREATE OR REPLACE FUNCTION tidebase.create_run(
    p_id text, p_workflow text, p_input jsonb, p_input_hash text, p_check_input boolean, p_metadata jsonb,
    p_parent_id text, p_lease_ms integer, p_channels jsonb DEFAULT NULL, p_recovery_webhook text DEFAULT NULL
) RETURNS TABLE (run tidebase.runs, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
BEGIN
    INSERT INTO tidebase.runs (id, workflow, input, input_hash, metadata, parent_id, lease_ms, webhooks,
                               recovery_webhook)
    VALUES (p_id, p_workflow, coalesce(p_input, '{}'), p_input_hash, coalesce(p_metadata, '{}'), p_parent_id,
            coalesce(p_lease_ms, 30000), tidebase.channel_entries(p_channels), p_recovery_webhook)
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO r;
    IF FOUND THEN
        INSERT INTO tidebase.events (run_id, seq, type, payload)
        VALUES (p_id, tidebase.next_seq(p_id, 1), 'run.created',
                jsonb_build_object('workflowName', p_workflow, 'input', r.input)
                || CASE WHEN r.webhooks = '[]' THEN '{}'::jsonb
                        ELSE jsonb_build_object('channels', tidebase.channel_list(r.webhooks)) END);
        SELECT * INTO r FROM tidebase.runs WHERE id = p_id;
        RETURN QUERY SELECT r, true;
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
    RETURN QUERY SELECT r, false;
END
$$;

-- Ends the step leases that p_owner took on run p_run_id: its running steps are interrupted from now on.
CREATE OR REPLACE FUNCTION tidebase.end_step_leases(p_run_id text, p_owner text) RETURNS void
LANGUAGE sql AS $$
    UPDATE tidebase.steps SET lease_expires_at = NULL
     WHERE run_id = p_run_id AND status = 'running' AND lease_owner = p_owner AND lease_expires_at IS NOT NULL
$$;

-- Takes the lease of a run for p_owner: a new fencing token, attempt + 1, expiry = now + lease; appends run.started.
-- Refuses a live lease held by another owner (TB002: DETAIL the owner, HINT the expiry) unless that owner is
-- p_dead_owner (a process of the caller's host that no longer exists; the judgement is the caller's, the token
-- fences the old holder whatever it was), whose lease is then taken over, its step leases ended, and the takeover
-- recorded as a recovery (reason owner_exited). Refuses a cancelled run (TB004). A completed run is returned
-- unchanged, with no lease. Recoveries still waiting for a worker are closed as resumed by p_owner. p_resume_queue
-- names the queue a worker may resume the run from should this lease expire off any queue.
CREATE OR REPLACE FUNCTION tidebase.acquire_run(
    p_id text, p_owner text, p_lease_ms integer, p_dead_owner text, p_resume_queue text
) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    v_now timestamptz := tidebase.now();
    v_takeover boolean := false;
    v_steps jsonb;
    v_rec text;
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
    IF r.status = 'running' AND r.lease_expires_at > v_now AND r.lease_owner IS DISTINCT FROM p_owner THEN
        IF p_dead_owner IS NULL OR r.lease_owner IS DISTINCT FROM p_dead_owner THEN
            RAISE EXCEPTION 'run % is leased by % until % (% s from now)', p_id, r.lease_owner,
                to_char(r.lease_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                round(extract(epoch FROM r.lease_expires_at - v_now)::numeric, 1)
                USING ERRCODE = 'TB002', DETAIL = coalesce(r.lease_owner, ''),
                      HINT = to_char(r.lease_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
        END IF;
        v_takeover := true;
    END IF;
    IF v_takeover THEN
        SELECT coalesce(jsonb_agg(key ORDER BY key), '[]') INTO v_steps
          FROM tidebase.steps WHERE run_id = p_id AND status = 'running';
        PERFORM tidebase.end_step_leases(p_id, p_dead_owner);
    END IF;
    UPDATE tidebase.runs
       SET status = 'running', lease_owner = p_owner, fencing_token = fencing_token + 1,
           lease_ms = coalesce(p_lease_ms, lease_ms),
           lease_expires_at = v_now + coalesce(p_lease_ms, lease_ms) * interval '1 millisecond',
           attempt = attempt + 1, updated_at = v_now, started_at = coalesce(started_at, v_now),
           resume_queue = coalesce(p_resume_queue, resume_queue)
     WHERE id = p_id
    RETURNING * INTO r;
    UPDATE tidebase.recoveries
       SET outcome = 'resumed', resumed_by = p_owner, resumed_at = v_now, resumed_token = r.fencing_token
     WHERE run_id = p_id AND outcome = 'requeued';
    IF v_takeover THEN
        INSERT INTO tidebase.recoveries (run_id, id, reason, detected_by, detected_at, previous_owner, previous_token,
                                         interrupted_steps, outcome, resumed_by, resumed_at, resumed_token)
        VALUES (p_id, tidebase.new_id('rec_'), 'owner_exited', p_owner, v_now, p_dead_owner, r.fencing_token - 1,
                v_steps, 'resumed', p_owner, v_now, r.fencing_token)
        RETURNING id INTO v_rec;
    END IF;
    PERFORM tidebase.log_event(p_id, 'run.started',
        jsonb_build_object('leaseOwner', p_owner, 'attempt', r.attempt, 'fencingToken', r.fencing_token)
        || CASE WHEN v_takeover
                THEN jsonb_build_object('takeover', jsonb_build_object(
                         'previousOwner', p_dead_owner, 'reason', 'owner_exited', 'recoveryId', v_rec,
                         'interruptedSteps', v_steps))
                ELSE '{}'::jsonb END);
    RETURN QUERY SELECT * FROM tidebase.runs WHERE id = p_id;
END
$$;

-- Extends the live lease held under p_token, and the step leases of its holder, to now + lease. Never revives an
-- expired lease (TB003); a run that ended has no lease to renew (TB003 for a completed run too; TB004 cancelled).
-- Returns the run. Appends nothing.
CREATE OR REPLACE FUNCTION tidebase.renew_lease(p_id text, p_token bigint) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
BEGIN
    UPDATE tidebase.runs SET lease_expires_at = tidebase.now() + lease_ms * interval '1 millisecond'
     WHERE id = p_id AND tidebase.admits(status, fencing_token, p_token) AND p_token IS NOT NULL
       AND lease_expires_at > tidebase.now()
    RETURNING * INTO r;
    IF NOT FOUND THEN
        SELECT * INTO r FROM tidebase.runs WHERE id = p_id;
        IF FOUND AND r.fencing_token = p_token AND r.status IN ('running', 'completed') THEN
            RAISE EXCEPTION 'lease on run % % before it was renewed', p_id,
                CASE r.status WHEN 'running' THEN 'expired' ELSE 'ended with the run' END USING ERRCODE = 'TB003';
        END IF;
        PERFORM tidebase.refuse(p_id, p_token);
    END IF;
    UPDATE tidebase.steps SET lease_expires_at = r.lease_expires_at
     WHERE run_id = p_id AND status = 'running' AND lease_owner = r.lease_owner;
    RETURN NEXT r;
END
$$;

-- Ends the run as completed under the holder's token: result stored, lease cleared, run.completed appended. The
-- same result again on the run this token completed returns it unchanged (a safe retry: no event).
CREATE OR REPLACE FUNCTION tidebase.complete_run(p_id text, p_token bigint, p_result jsonb) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    v_seq bigint;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_id;
    IF r.status = 'completed' AND r.fencing_token = p_token AND r.result IS NOT DISTINCT FROM p_result THEN
        RETURN NEXT r;
        RETURN;
    END IF;
    v_seq := tidebase.fence(p_id, p_token, 1);
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

-- Ends the attempt as failed under the holder's token, clearing the lease. A run with a parked step goes to
-- manual_review (failure class `manual_review`). A queued run with attempts left goes back to its queue after
-- retry_backoff * 2^failures (capped at one hour) with run.requeued; otherwise the run is failed (failure class
-- `max_retries` for a queued run that used its attempts, else p_failure_class) with run.failed, and a run with a
-- recovery webhook gets an automatic `run_failed` recovery (tidebase.schedule_recovery).
CREATE OR REPLACE FUNCTION tidebase.fail_run(p_id text, p_token bigint, p_error jsonb, p_failure_class text,
                                             p_max_auto_recoveries integer)
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
    PERFORM tidebase.end_step_leases(p_id, r.lease_owner);
    SELECT EXISTS (SELECT 1 FROM tidebase.steps WHERE run_id = p_id AND status = 'manual_review') INTO v_parked;
    IF NOT v_parked AND r.queue IS NOT NULL AND r.failures + 1 < r.max_attempts THEN
        v_delay := least(r.retry_backoff_ms * power(2, r.failures), 3600000) * interval '1 millisecond';
        INSERT INTO tidebase.events (run_id, seq, type, payload)
        VALUES (p_id, v_seq, 'run.requeued',
                jsonb_build_object('error', p_error, 'attempt', r.attempt, 'maxAttempts', r.max_attempts,
                                   'nextRunAt', tidebase.now() + v_delay, 'failures', r.failures + 1));
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
    UPDATE tidebase.runs
       SET status = CASE WHEN v_parked THEN 'manual_review' ELSE 'failed' END,
           error = p_error, failure_class = v_class,
           failures = failures + CASE WHEN v_parked THEN 0 ELSE 1 END,
           lease_owner = NULL, lease_expires_at = NULL, updated_at = tidebase.now()
     WHERE id = p_id;
    IF NOT v_parked THEN
        PERFORM tidebase.schedule_recovery(p_id, 'run_failed', true, p_max_auto_recoveries);
    END IF;
    RETURN QUERY SELECT * FROM tidebase.runs WHERE id = p_id;
END
$$;

-- Parks a run that waits for a gate: status waiting, lease released (fenced by the holder's token).
CREATE OR REPLACE FUNCTION tidebase.suspend_run(p_run_id text, p_token bigint, p_gate_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
BEGIN
    PERFORM tidebase.end_step_leases(p_run_id, (SELECT lease_owner FROM tidebase.runs WHERE id = p_run_id));
    UPDATE tidebase.runs
       SET status = 'waiting', lease_owner = NULL, lease_expires_at = NULL, updated_at = tidebase.now()
     WHERE id = p_run_id;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'run.suspended', jsonb_build_object('gateId', p_gate_id));
END
$$;

-- Cancels a run that is not terminal, then its pending gates (status `canceled`, waiters woken) and its non-terminal
-- child runs, recursively, with the same reason and actor. Idempotent: a cancelled run is returned unchanged (first
-- reason kept). A completed run raises TB007. The status change happens under the run row lock, so it is linearized
-- with every fenced write: once it commits, the fence refuses every step, state or completion write of the run. Locks
-- go parent first, then its gates, then each child (in id order), the same order as every other writer.
CREATE OR REPLACE FUNCTION tidebase.cancel_run(p_id text, p_reason text, p_actor text) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    g tidebase.gates%ROWTYPE;
    c record;
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
           completed_at = tidebase.now(), lease_owner = NULL, lease_expires_at = NULL, updated_at = tidebase.now()
     WHERE id = p_id;
    PERFORM tidebase.log_event(p_id, 'run.cancelled', jsonb_build_object('reason', p_reason, 'actor', p_actor));
    UPDATE tidebase.recoveries SET outcome = 'cancelled' WHERE run_id = p_id AND outcome = 'requeued';
    FOR g IN
        UPDATE tidebase.gates
           SET status = 'canceled', decision = 'canceled', actor = p_actor,
               payload = jsonb_build_object('reason', p_reason), resolved_at = tidebase.now(),
               updated_at = tidebase.now()
         WHERE run_id = p_id AND status = 'pending'
        RETURNING *
    LOOP
        PERFORM tidebase.log_event(p_id, 'gate.resolved',
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
    RETURN QUERY SELECT * FROM tidebase.runs WHERE id = p_id;
END
$$;

-- Cancels run p_run_id with reason `deadline` (actor `reconciler`) when its deadline has passed and it is not
-- terminal; a run that completed meanwhile is left as it is. True when it cancelled the run.
CREATE OR REPLACE FUNCTION tidebase.cancel_if_overdue(p_run_id text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tidebase.runs
                WHERE id = p_run_id AND deadline_at < tidebase.now()
                  AND status IN ('pending', 'queued', 'running', 'waiting')) THEN
        BEGIN
            PERFORM tidebase.cancel_run(p_run_id, 'deadline', 'reconciler');
            RETURN true;
        EXCEPTION WHEN SQLSTATE 'TB007' THEN
            RETURN false;  -- completed between the check and the lock
        END;
    END IF;
    RETURN false;
END
$$;
