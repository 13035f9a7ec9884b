-- Steps: the step decision (begin), completion, failure and the operator's review, for both doors.
--
-- tidebase.begin_step is the one implementation of the step decision procedure (docs/http-api.md#step-decision-order,
-- I8). The HTTP door calls it for every steps/begin; the library calls it whenever a step needs a durable `running`
-- marker (a step with side effects or a non-auto replay mode) and for a step it found interrupted under a contract that
-- forbids a blind re-run. The library answers the rest from the checkpoints it loaded with the lease, without a round
-- trip: a completed checkpoint is replayed, a checkpoint of other input or a parked one is refused (steps 3, 4 and 7 of
-- the procedure, on rows that only this lease holder or an operator can change), and a pure step, which needs no
-- marker, is executed and then completed in one statement: tidebase.complete_step is then its marker and its
-- completion.
--
-- tidebase.complete_step and tidebase.fail_step take p_begun: true for a step the caller began (HTTP always; the step
-- must then be running under the holder's step lease), false for the library's marker-less steps (the step may then
-- also be new, failed, or left running by an earlier holder). Both pass the fence first, so a refused write changes
-- nothing, and both keep a completed step as it is (I1).

-- A step's resume contract as events show it: every field of the resumeContract of
-- docs/http-api.md#object-resume-contract, the stored ones over the defaults (rows store only the fields a contract
-- sets beyond sideEffects, idempotencyKey and replay).
CREATE OR REPLACE FUNCTION tidebase.contract_document(p_contract jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('sideEffects', '[]'::jsonb, 'idempotencyKey', NULL, 'replay', 'auto',
                              'checkpointInvariant', NULL, 'verifiedBy', NULL, 'credentials', '[]'::jsonb)
           || coalesce(p_contract, '{}')
$$;

-- Explains, by raising, why a completion or failure of step p_key could not be applied: another input hash (TB005),
-- already completed (TB014), parked for review (TB006, unless p_begun), or not running under the holder's step lease
-- (TB003).
CREATE OR REPLACE FUNCTION tidebase.step_refusal(p_run_id text, p_key text, p_input_hash text, p_begun boolean)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s tidebase.steps%ROWTYPE;
BEGIN
    SELECT * INTO s FROM tidebase.steps WHERE run_id = p_run_id AND key = p_key;
    IF s.input_hash <> p_input_hash THEN
        RAISE EXCEPTION 'step % of run % was checkpointed for other input', p_key, p_run_id
            USING ERRCODE = 'TB005', DETAIL = 'step';
    ELSIF s.status = 'completed' THEN
        RAISE EXCEPTION 'step % of run % is already completed', p_key, p_run_id USING ERRCODE = 'TB014';
    ELSIF s.status = 'manual_review' AND NOT p_begun THEN
        RAISE EXCEPTION 'step % of run % is parked for manual review', p_key, p_run_id USING ERRCODE = 'TB006';
    END IF;
    RAISE EXCEPTION 'step % of run % is not running under the lease holder''s step lease', p_key, p_run_id
        USING ERRCODE = 'TB003';
END
$$;

-- The step decision procedure (docs/http-api.md#step-decision-order), atomic under the run row lock, for the holder of
-- p_token. Returns the action and the step row (null for `cancelled`): cancelled       the run is cancelled;
-- input_mismatch  the step exists with another input hash, whatever its status; return          the step is completed
-- (no lease is needed); (TB007)         the run is completed; (TB003) p_token does not hold the run (tidebase.fence's
-- rule); (TB006)         the step is parked for review; locked          the step is running under another owner's live
-- step lease; parked          the step was interrupted (running under another owner's ended step lease) and its stored
-- contract does not replay automatically: it is now manual_review, with step.failed (committed); execute         the
-- step is (re)started: running, attempt 1 or + 1, step lease (the holder, now + lease), run lease renewed when live,
-- step.started appended.
CREATE OR REPLACE FUNCTION tidebase.begin_step(
    p_run_id text, p_token bigint, p_key text, p_name text, p_occurrence integer, p_input_hash text,
    p_input jsonb, p_options jsonb, p_contract jsonb
) RETURNS TABLE (action text, step tidebase.steps)
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    s tidebase.steps%ROWTYPE;
    v_now timestamptz := tidebase.now();
    v_seq bigint;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    ELSIF r.status = 'cancelled' THEN
        RETURN QUERY SELECT 'cancelled'::text, NULL::tidebase.steps;
        RETURN;
    END IF;
    SELECT * INTO s FROM tidebase.steps WHERE run_id = p_run_id AND key = p_key FOR UPDATE;
    IF s.id IS NOT NULL AND s.input_hash <> p_input_hash THEN
        RETURN QUERY SELECT 'input_mismatch'::text, s;
        RETURN;
    ELSIF s.id IS NOT NULL AND s.status = 'completed' THEN
        RETURN QUERY SELECT 'return'::text, s;
        RETURN;
    ELSIF p_token IS NULL OR NOT tidebase.admits(r.status, r.fencing_token, p_token) THEN
        PERFORM tidebase.refuse(p_run_id, p_token);
    ELSIF s.id IS NOT NULL AND s.status = 'manual_review' THEN
        RAISE EXCEPTION 'step % of run % is parked for manual review', p_key, p_run_id USING ERRCODE = 'TB006';
    END IF;
    IF s.id IS NOT NULL AND s.status = 'running' AND s.lease_owner IS DISTINCT FROM r.lease_owner THEN
        IF s.lease_expires_at > v_now THEN
            RETURN QUERY SELECT 'locked'::text, s;
            RETURN;
        END IF;
        IF coalesce(s.contract ->> 'replay', 'auto') <> 'auto' THEN
            v_seq := tidebase.fence(p_run_id, p_token, 1);
            UPDATE tidebase.steps
               SET status = 'manual_review', resume_decision = 'manual_review', lease_owner = NULL,
                   lease_token = NULL, lease_expires_at = NULL, updated_at = v_now,
                   error = jsonb_build_object('message', 'step interrupted: its lease expired')
             WHERE run_id = p_run_id AND key = p_key
            RETURNING * INTO s;
            INSERT INTO tidebase.events (run_id, seq, type, payload)
            VALUES (p_run_id, v_seq, 'step.failed',
                    jsonb_build_object('stepId', s.id, 'name', p_key, 'attempt', s.attempt, 'status', s.status,
                                       'retryable', false, 'resumeDecision', 'manual_review',
                                       'resumeContract', tidebase.contract_document(s.contract), 'error', s.error));
            RETURN QUERY SELECT 'parked'::text, s;
            RETURN;
        END IF;
    END IF;
    v_seq := tidebase.fence(p_run_id, p_token, 1);
    INSERT INTO tidebase.steps AS t (run_id, key, id, name, occurrence, input_hash, input, options, contract, status,
                                     attempt, lease_owner, lease_token, lease_expires_at, started_at)
    VALUES (p_run_id, p_key, tidebase.new_id('step_'), p_name, p_occurrence, p_input_hash, coalesce(p_input, '{}'),
            coalesce(p_options, '{}'), p_contract, 'running', 1, r.lease_owner, p_token,
            v_now + r.lease_ms * interval '1 millisecond', v_now)
    ON CONFLICT (run_id, key) DO UPDATE
       SET status = 'running', attempt = t.attempt + 1, input = excluded.input, options = excluded.options,
           contract = excluded.contract, lease_owner = excluded.lease_owner, lease_token = excluded.lease_token,
           lease_expires_at = excluded.lease_expires_at, started_at = coalesce(t.started_at, excluded.started_at),
           updated_at = v_now
    RETURNING * INTO s;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'step.started',
            jsonb_build_object('stepId', s.id, 'name', p_key, 'attempt', s.attempt,
                               'resumeContract', tidebase.contract_document(s.contract)));
    RETURN QUERY SELECT 'execute'::text, s;
END
$$;

-- The library's reading of a begin_step decision for a step it is about to execute: the attempt for `execute`; NULL
-- for `parked` (committed; the caller raises ManualReviewRequired). The other decisions wrote nothing and raise:
-- cancelled TB004, input_mismatch TB005, return TB014 (completed since the checkpoints were loaded), locked TB009.
CREATE OR REPLACE FUNCTION tidebase.marker_attempt(p_action text, p_step tidebase.steps, p_run_id text, p_key text)
RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    IF p_action = 'execute' THEN
        RETURN p_step.attempt;
    ELSIF p_action = 'parked' THEN
        RETURN NULL;
    ELSIF p_action = 'cancelled' THEN
        PERFORM tidebase.refuse(p_run_id, NULL);
    ELSIF p_action = 'input_mismatch' THEN
        RAISE EXCEPTION 'step % of run % was checkpointed for other input', p_key, p_run_id
            USING ERRCODE = 'TB005', DETAIL = 'step';
    ELSIF p_action = 'return' THEN
        RAISE EXCEPTION 'step % of run % is already completed', p_key, p_run_id USING ERRCODE = 'TB014';
    END IF;
    RAISE EXCEPTION 'step % of run % is running under another holder''s live step lease (until %)', p_key, p_run_id,
        p_step.lease_expires_at USING ERRCODE = 'TB009';
END
$$;

-- Completes step p_key under the holder's token: the fence first (one call that locks the run row and reserves the
-- event's seq), then a conditional upsert that never overwrites a completed or parked step nor one of other input
-- (I1, I2), then step.completed. The executed-step hot path: one round trip, one transaction. p_begun: see the header.
-- Returns the step id; raises (tidebase.refuse, tidebase.step_refusal) otherwise, which rolls the reserved seq back
-- too.
CREATE OR REPLACE FUNCTION tidebase.complete_step(
    p_run_id text, p_token bigint, p_key text, p_step_id text, p_name text, p_occurrence integer,
    p_input_hash text, p_contract jsonb, p_output jsonb, p_attempt integer, p_begun boolean DEFAULT false
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
    v_now timestamptz := tidebase.now();
    v_holder text;
    v_id text;
    v_attempt integer;
    v_contract jsonb;
BEGIN
    IF p_begun THEN
        SELECT lease_owner INTO v_holder FROM tidebase.runs WHERE id = p_run_id;
    END IF;
    INSERT INTO tidebase.steps AS t (run_id, key, id, name, occurrence, input_hash, contract, status, output, attempt,
                                     started_at, completed_at, updated_at)
    VALUES (p_run_id, p_key, p_step_id, p_name, p_occurrence, p_input_hash, p_contract, 'completed', p_output,
            p_attempt, v_now, v_now, v_now)
    ON CONFLICT (run_id, key) DO UPDATE
       SET status = 'completed', output = excluded.output, error = NULL, attempt = excluded.attempt,
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
           completed_at = excluded.completed_at, updated_at = excluded.completed_at
     WHERE t.status NOT IN ('completed', 'manual_review') AND t.input_hash = excluded.input_hash
       AND (NOT p_begun OR (t.status = 'running' AND t.lease_owner = v_holder))
    RETURNING t.id, t.attempt, t.contract INTO v_id, v_attempt, v_contract;
    IF v_id IS NULL THEN
        PERFORM tidebase.step_refusal(p_run_id, p_key, p_input_hash, p_begun);
    END IF;
    INSERT INTO tidebase.events (run_id, seq, type, payload, created_at)
    VALUES (p_run_id, v_seq, 'step.completed',
            jsonb_build_object('stepId', v_id, 'name', p_key, 'attempt', v_attempt,
                               'checkpointInvariant', v_contract -> 'checkpointInvariant',
                               'verifiedBy', v_contract -> 'verifiedBy'), v_now);
    RETURN v_id;
END
$$;

-- Records a failed attempt of step p_key under the holder's token, classified as
-- docs/http-api.md#failure-classification says: the decision is p_decision, else auto_retry when p_retryable, else from
-- the stored contract's replay mode (manual: manual_review, never: fail_hard, auto: safe_replay); the status is
-- failed_retryable when p_retryable or auto_retry, manual_review for manual_review, failed otherwise. Creates the step
-- row when the attempt had no marker (a library pure step); never touches a completed step. Appends step.failed.
-- Returns the step row.
CREATE OR REPLACE FUNCTION tidebase.fail_step(
    p_run_id text, p_token bigint, p_key text, p_name text, p_occurrence integer, p_input_hash text,
    p_contract jsonb, p_attempt integer, p_retryable boolean, p_decision text, p_error jsonb,
    p_begun boolean DEFAULT false
) RETURNS SETOF tidebase.steps
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
    v_holder text := (SELECT lease_owner FROM tidebase.runs WHERE id = p_run_id);
    s tidebase.steps%ROWTYPE;
    v_retryable boolean := coalesce(p_retryable, false);
    v_decision text;
    v_status text;
BEGIN
    SELECT * INTO s FROM tidebase.steps WHERE run_id = p_run_id AND key = p_key FOR UPDATE;
    IF s.id IS NOT NULL AND (s.status = 'completed' OR s.input_hash <> p_input_hash
                             OR (p_begun AND (s.status <> 'running' OR s.lease_owner IS DISTINCT FROM v_holder)))
    THEN
        PERFORM tidebase.step_refusal(p_run_id, p_key, p_input_hash, p_begun);
    END IF;
    v_decision := coalesce(p_decision,
                           CASE WHEN v_retryable THEN 'auto_retry'
                                ELSE CASE coalesce(coalesce(s.contract, p_contract) ->> 'replay', 'auto')
                                         WHEN 'manual' THEN 'manual_review'
                                         WHEN 'never' THEN 'fail_hard'
                                         ELSE 'safe_replay' END END);
    v_status := CASE WHEN v_retryable OR v_decision = 'auto_retry' THEN 'failed_retryable'
                     WHEN v_decision = 'manual_review' THEN 'manual_review'
                     ELSE 'failed' END;
    INSERT INTO tidebase.steps AS t (run_id, key, id, name, occurrence, input_hash, contract, status, error,
                                     resume_decision, attempt, started_at)
    VALUES (p_run_id, p_key, tidebase.new_id('step_'), p_name, p_occurrence, p_input_hash, p_contract, v_status,
            p_error, v_decision, p_attempt, tidebase.now())
    ON CONFLICT (run_id, key) DO UPDATE
       SET status = excluded.status, error = excluded.error, resume_decision = excluded.resume_decision,
           attempt = excluded.attempt, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
           updated_at = tidebase.now()
    RETURNING * INTO s;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'step.failed',
            jsonb_build_object('stepId', s.id, 'name', p_key, 'attempt', s.attempt, 'status', v_status,
                               'retryable', v_retryable, 'resumeDecision', v_decision,
                               'resumeContract', tidebase.contract_document(s.contract), 'error', p_error));
    RETURN NEXT s;
END
$$;

-- Operator actions on a parked step; no lease is needed (an unfenced write: terminal runs refuse it). release: the
-- step may run again (failed_retryable). skip: the step is completed with the operator's output and is replayed from
-- it. Either appends step.reviewed, and a run left with no parked step moves from manual_review to pending so that it
-- can be resumed. TB008 for an unknown step, TB009 for a step that is not parked. Returns the step id.
CREATE OR REPLACE FUNCTION tidebase.review_step(
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
