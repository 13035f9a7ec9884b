-- Recovery: runs whose holder went away are put back to work, and every attempt is recorded.
--
-- *Lease expiry.* The reconciler (one active at a time, by advisory lock, in workers and the server) moves runs whose
-- lease expired and that a worker may resume (on a queue, or off any queue with a resume_queue) back to their queue,
-- in short transactions that re-check the condition under the row lock, and records each attempt in
-- tidebase.recoveries (who detected it, when, why, the previous holder, and the outcome, filled in when a worker
-- resumes the run). The zombie keeps its token but the run is no longer `running` under it, so the fence refuses
-- every write it tries; the next claim bumps the token. A crash is not a workflow failure: an expired run is requeued
-- (with backoff) while it has attempts left, counting at least 10, and only a run that keeps killing its workers ends
-- `failed` (`max_retries`).
--
-- *Recovery webhooks* (`run.resume`, to a run's recovery_webhook) are outbox rows of kind `recovery`, decided in the
-- transaction that decides them, each with a public id (`rec_`) and a `recovery.started` event. Automatic ones (a
-- final failure, an expired lease of a run that is not on a queue) are spaced and capped per run: none while another
-- is pending, the k-th waits min(3600, 60 * 2^(k-2)) s after the previous one was created, at most p_max_auto per run
-- (the caller's setting `max_auto_recoveries`, 10 by default, passed down by whoever decides: the run's failure or
-- the reconciler).
--
-- *Deadlines.* Runs past their deadline are cancelled (reason `deadline`) by the reconciler, and by the HTTP routes
-- begin and steps/begin before they answer (tidebase.cancel_if_overdue).

-- Schedules a `run.resume` webhook to the run's recovery_webhook with reason p_reason, in the caller's transaction,
-- which holds the run row lock. Automatic ones (p_auto) obey the policy in the header, at most p_max_auto of them,
-- and may be declined (no row returned); a manual one is always created and is neither spaced nor counted. Raises
-- TB001 for an unknown run.
CREATE OR REPLACE FUNCTION tidebase.schedule_recovery(p_run_id text, p_reason text, p_auto boolean,
                                                      p_max_auto integer)
RETURNS SETOF tidebase.outbox
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    o tidebase.outbox%ROWTYPE;
    v_count integer;
    v_last timestamptz;
    v_first timestamptz := tidebase.now();
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    ELSIF r.recovery_webhook IS NULL THEN
        RETURN;
    END IF;
    IF p_auto THEN
        IF EXISTS (SELECT 1 FROM tidebase.outbox WHERE run_id = p_run_id AND kind = 'recovery' AND status = 'pending'
                                                   AND auto) THEN
            RETURN;
        END IF;
        SELECT count(*), max(created_at) INTO v_count, v_last
          FROM tidebase.outbox WHERE run_id = p_run_id AND kind = 'recovery' AND auto;
        IF v_count >= p_max_auto THEN
            RETURN;
        END IF;
        IF v_count >= 1 THEN
            v_first := greatest(v_first, v_last + least(3600, 60 * power(2, v_count - 1)) * interval '1 second');
        END IF;
    END IF;
    INSERT INTO tidebase.outbox (run_id, kind, event_type, url, secret, body, public_id, reason, auto,
                                 next_attempt_at)
    VALUES (p_run_id, 'recovery', 'run.resume', r.recovery_webhook, r.recovery_secret,
            jsonb_build_object('type', 'run.resume', 'runId', r.id, 'workflowName', r.workflow, 'reason', p_reason,
                               'attempt', r.attempt)::text,
            tidebase.new_id('rec_'), p_reason, p_auto, v_first)
    RETURNING * INTO o;
    PERFORM tidebase.log_event(p_run_id, 'recovery.started',
                               jsonb_build_object('recoveryAttemptId', o.public_id, 'reason', p_reason));
    RETURN NEXT o;
END
$$;

-- Manual recovery (POST /runs/:id/recover): the run row locked and terminal runs refused by the fence (TB001, TB004,
-- TB007), then a run.resume webhook. No row when the run has no recovery webhook.
CREATE OR REPLACE FUNCTION tidebase.request_recovery(p_run_id text, p_reason text) RETURNS SETOF tidebase.outbox
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tidebase.fence(p_run_id, NULL, 0);
    RETURN QUERY SELECT * FROM tidebase.schedule_recovery(p_run_id, p_reason, false, NULL);
END
$$;

-- Handles up to p_limit runs whose lease expired and that a worker may resume (on a queue, or off any queue with a
-- resume_queue): back to their queue after backoff while attempts are left (at least 10: a crash is not a workflow
-- failure), recording a recovery; otherwise failed with `max_retries` (reason lease_expired). Returns the recoveries
-- of the requeued runs.
CREATE OR REPLACE FUNCTION tidebase.recover_expired(p_actor text, p_limit integer) RETURNS SETOF tidebase.recoveries
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    v tidebase.recoveries%ROWTYPE;
    v_now timestamptz := tidebase.now();  -- a value, not a volatile call, so the index range is bounded by it
    v_steps jsonb;
    v_next timestamptz;
    v_queue text;
    v_error jsonb := '{"message": "lease expired with no attempts remaining"}';
BEGIN
    FOR r IN SELECT * FROM tidebase.runs
              WHERE status = 'running' AND (queue IS NOT NULL OR resume_queue IS NOT NULL)
                AND lease_expires_at < v_now
              ORDER BY lease_expires_at
              LIMIT p_limit
                FOR UPDATE SKIP LOCKED LOOP
        IF r.attempt >= greatest(r.max_attempts, 10) THEN
            UPDATE tidebase.runs
               SET status = 'failed', failure_class = 'max_retries', error = v_error, lease_owner = NULL,
                   lease_expires_at = NULL, updated_at = v_now
             WHERE id = r.id;
            PERFORM tidebase.log_event(r.id, 'run.failed',
                jsonb_build_object('error', v_error, 'failureClass', 'max_retries', 'reason', 'lease_expired'));
            CONTINUE;
        END IF;
        v_queue := coalesce(r.queue, r.resume_queue);
        SELECT coalesce(jsonb_agg(key ORDER BY key), '[]') INTO v_steps
          FROM tidebase.steps WHERE run_id = r.id AND status = 'running';
        -- the first crash is retried at once; repeated ones back off like failures do
        v_next := v_now + CASE WHEN r.attempt <= 1 THEN interval '0'
                               ELSE least(r.retry_backoff_ms * power(2, r.attempt - 2), 3600000)
                                    * interval '1 millisecond' END;
        UPDATE tidebase.runs
           SET status = 'queued', queue = v_queue, available_at = v_next, lease_owner = NULL,
               lease_expires_at = NULL, updated_at = v_now
         WHERE id = r.id;
        INSERT INTO tidebase.recoveries (run_id, id, reason, detected_by, detected_at, previous_owner, previous_token,
                                         interrupted_steps)
        VALUES (r.id, tidebase.new_id('rec_'), 'lease_expired', p_actor, v_now, r.lease_owner, r.fencing_token,
                v_steps)
        RETURNING * INTO v;
        PERFORM tidebase.log_event(r.id, 'run.requeued',
            jsonb_build_object('reason', 'lease_expired', 'attempt', r.attempt, 'queue', v_queue,
                               'maxAttempts', r.max_attempts, 'nextRunAt', v_next, 'recoveryId', v.id,
                               'previousOwner', r.lease_owner, 'previousToken', r.fencing_token,
                               'interruptedSteps', v_steps, 'detectedBy', p_actor));
        PERFORM pg_notify('tidebase_queues', v_queue);
        RETURN NEXT v;
    END LOOP;
END
$$;

-- Schedules a `lease_expired` recovery webhook for up to p_limit runs that are not on a queue, have a recovery
-- webhook, and whose lease expired, under the automatic policy; they stay `running` and anyone may take them over.
-- Returns the run ids for which a webhook was scheduled.
CREATE OR REPLACE FUNCTION tidebase.recover_expired_webhooks(p_limit integer, p_max_auto integer)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    v_now timestamptz := tidebase.now();
BEGIN
    FOR r IN SELECT * FROM tidebase.runs
              WHERE status = 'running' AND queue IS NULL AND recovery_webhook IS NOT NULL
                AND lease_expires_at < v_now
                AND NOT EXISTS (SELECT 1 FROM tidebase.outbox o
                                 WHERE o.run_id = runs.id AND o.kind = 'recovery' AND o.status = 'pending')
                AND (SELECT count(*) FROM tidebase.outbox o
                      WHERE o.run_id = runs.id AND o.kind = 'recovery' AND o.auto) < p_max_auto
              ORDER BY lease_expires_at
              LIMIT p_limit
                FOR UPDATE SKIP LOCKED LOOP
        IF EXISTS (SELECT 1 FROM tidebase.schedule_recovery(r.id, 'lease_expired', true, p_max_auto)) THEN
            RETURN NEXT r.id;
        END IF;
    END LOOP;
END
$$;

-- Operator recovery: puts a run that nobody is executing back on a queue now (its own, else p_queue), with a
-- recorded recovery (reason operator) and run.recovering. Accepted for failed, pending, waiting and queued runs, and
-- for running runs whose lease expired; anything else is refused with TB009 saying exactly why (a live lease and
-- when it expires; parked steps to release or skip; a terminal status). Returns the requeued run.
CREATE OR REPLACE FUNCTION tidebase.recover_run(p_id text, p_actor text, p_queue text) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    v_now timestamptz := tidebase.now();
    v_rec text;
    v_parked text;
    v_previous text;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_id USING ERRCODE = 'TB001';
    ELSIF r.status IN ('completed', 'cancelled') THEN
        RAISE EXCEPTION 'run % is % and cannot be recovered (a finished run stays finished; fork it to run it again)',
            p_id, r.status USING ERRCODE = 'TB009';
    ELSIF r.status = 'manual_review' THEN
        SELECT string_agg(key, ', ' ORDER BY key) INTO v_parked
          FROM tidebase.steps WHERE run_id = p_id AND status = 'manual_review';
        RAISE EXCEPTION 'run % is parked for manual review at step(s) %: release or skip them first '
            '(tidebase runs release-step / skip-step); the run then resumes', p_id, coalesce(v_parked, '?')
            USING ERRCODE = 'TB009';
    ELSIF r.status = 'running' AND r.lease_expires_at > v_now THEN
        RAISE EXCEPTION 'run % is running: % holds its lease until % (% s from now); it can be recovered once the '
            'lease expires, or cancelled now', p_id, r.lease_owner,
            to_char(r.lease_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            round(extract(epoch FROM r.lease_expires_at - v_now)::numeric, 1)
            USING ERRCODE = 'TB009';
    END IF;
    INSERT INTO tidebase.recoveries (run_id, id, reason, detected_by, detected_at, previous_owner, previous_token,
                                     interrupted_steps)
    VALUES (p_id, tidebase.new_id('rec_'), 'operator', p_actor, v_now, r.lease_owner, r.fencing_token,
            (SELECT coalesce(jsonb_agg(key ORDER BY key), '[]') FROM tidebase.steps
              WHERE run_id = p_id AND status = 'running'))
    RETURNING id INTO v_rec;
    v_previous := r.status;
    UPDATE tidebase.runs
       SET status = 'queued', queue = coalesce(queue, p_queue), available_at = v_now, failures = 0,
           updated_at = v_now, lease_owner = NULL, lease_expires_at = NULL
     WHERE id = p_id
    RETURNING * INTO r;
    PERFORM tidebase.log_event(p_id, 'run.recovering',
        jsonb_build_object('recoveryId', v_rec, 'reason', 'operator', 'actor', p_actor, 'queue', r.queue,
                           'previousStatus', v_previous));
    PERFORM pg_notify('tidebase_queues', r.queue);
    RETURN QUERY SELECT * FROM tidebase.runs WHERE id = p_id;
END
$$;

-- Cancels up to p_limit runs past their deadline, with reason `deadline`. Returns their ids.
CREATE OR REPLACE FUNCTION tidebase.cancel_overdue(p_actor text, p_limit integer) RETURNS SETOF text
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
