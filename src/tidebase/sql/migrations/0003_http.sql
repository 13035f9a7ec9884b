-- Tidebase schema, version 3: the HTTP protocol (`tidebase serve`, wire-api.md).
--
-- HTTP clients fence by *owner*, not by fencing token: the holder of a run is the `lease_owner` recorded on a
-- `running` run (expired or not) until another acquisition, completion, failure or cancellation replaces or clears
-- it. Each function below locks the run row first (the lock order of migration 2), reads the holder's current
-- fencing token under that lock and, where the library already has the transition, calls the library's function
-- with that token. A run begun over HTTP is therefore fenced exactly like a run begun by the library, and either
-- side can resume what the other began (same tables, same keys, same hashes, same tokens).
--
-- A step begun over HTTP has key = its name (occurrence 1), which is the library's key of a step's first
-- occurrence. Step leases: steps.lease_owner / lease_token / lease_expires_at, set by steps/begin `execute`.
--
-- New SQLSTATEs: TB014 step already completed with another output, TB015 step is not in manual_review.

ALTER TABLE tidebase.steps ADD COLUMN options jsonb;

-- Creates the run (or returns it unchanged when it exists with the same workflow and input); `created` says which.
CREATE FUNCTION tidebase.http_create_run(
    p_id text, p_workflow text, p_input jsonb, p_input_hash text, p_metadata jsonb, p_lease_ms integer
) RETURNS TABLE (run tidebase.runs, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_existed boolean;
BEGIN
    PERFORM 1 FROM tidebase.runs WHERE id = p_id;
    v_existed := FOUND;
    RETURN QUERY SELECT c, NOT v_existed
                   FROM tidebase.create_run(p_id, p_workflow, p_input, p_input_hash, true, p_metadata, NULL,
                                            p_lease_ms) AS c;
END
$$;

-- Extends the live lease of the holder p_owner and its running step leases. Never revives an expired lease (TB003).
CREATE FUNCTION tidebase.http_heartbeat(p_run_id text, p_owner text) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    ELSIF r.status = 'cancelled' THEN
        RAISE EXCEPTION 'run % is cancelled', p_run_id USING ERRCODE = 'TB004', DETAIL = coalesce(r.cancel_reason, '');
    ELSIF r.status <> 'running' OR r.lease_owner IS DISTINCT FROM p_owner OR r.lease_expires_at <= tidebase.now() THEN
        RAISE EXCEPTION 'lease on run % lost', p_run_id USING ERRCODE = 'TB003';
    END IF;
    UPDATE tidebase.runs SET lease_expires_at = tidebase.now() + lease_ms * interval '1 millisecond'
     WHERE id = p_run_id RETURNING * INTO r;
    UPDATE tidebase.steps SET lease_expires_at = r.lease_expires_at
     WHERE run_id = p_run_id AND status = 'running' AND lease_owner = p_owner;
    RETURN NEXT r;
END
$$;

-- Completes the run (wire §4.6). p_owner null is the compatibility path: only status `running` is required. The same
-- result on a completed run returns it unchanged (a safe retry, no event).
CREATE FUNCTION tidebase.http_complete_run(p_run_id text, p_owner text, p_result jsonb) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    ELSIF r.status = 'cancelled' THEN
        RAISE EXCEPTION 'run % is cancelled', p_run_id USING ERRCODE = 'TB004', DETAIL = coalesce(r.cancel_reason, '');
    ELSIF r.status = 'completed' THEN
        IF r.result IS NOT DISTINCT FROM p_result THEN
            RETURN NEXT r;
            RETURN;
        END IF;
        RAISE EXCEPTION 'run % is already completed', p_run_id USING ERRCODE = 'TB007';
    ELSIF r.status <> 'running' OR (p_owner IS NOT NULL AND r.lease_owner IS DISTINCT FROM p_owner) THEN
        RAISE EXCEPTION 'lease on run % lost', p_run_id USING ERRCODE = 'TB003';
    END IF;
    RETURN QUERY SELECT * FROM tidebase.complete_run(p_run_id, r.fencing_token, p_result);
END
$$;

-- Fails the run (wire §4.7), fenced like http_complete_run; a completed run always refuses (TB007). A run with a
-- parked step gets failure class `manual_review` (the library's fail_run marks it).
CREATE FUNCTION tidebase.http_fail_run(p_run_id text, p_owner text, p_error jsonb, p_failure_class text)
RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    ELSIF r.status = 'cancelled' THEN
        RAISE EXCEPTION 'run % is cancelled', p_run_id USING ERRCODE = 'TB004', DETAIL = coalesce(r.cancel_reason, '');
    ELSIF r.status = 'completed' THEN
        RAISE EXCEPTION 'run % is already completed', p_run_id USING ERRCODE = 'TB007';
    ELSIF r.status <> 'running' OR (p_owner IS NOT NULL AND r.lease_owner IS DISTINCT FROM p_owner) THEN
        RAISE EXCEPTION 'lease on run % lost', p_run_id USING ERRCODE = 'TB003';
    END IF;
    RETURN QUERY SELECT * FROM tidebase.fail_run(p_run_id, r.fencing_token, p_error, p_failure_class);
END
$$;

-- The steps/begin decision procedure of wire §7.3, atomic under the run row lock. Returns the action
-- (cancelled, input_mismatch, return, locked, execute, parked) and the step row (null for cancelled). `parked` means
-- an interrupted step whose replay is not `auto` was just moved to manual_review (committed); the caller answers 409.
CREATE FUNCTION tidebase.http_begin_step(
    p_run_id text, p_owner text, p_name text, p_input_hash text, p_input jsonb, p_options jsonb, p_contract jsonb
) RETURNS TABLE (action text, step tidebase.steps)
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    s tidebase.steps%ROWTYPE;
    v_seq bigint;
    v_expires timestamptz;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    ELSIF r.status = 'cancelled' THEN
        RETURN QUERY SELECT 'cancelled'::text, NULL::tidebase.steps;
        RETURN;
    END IF;
    SELECT * INTO s FROM tidebase.steps WHERE run_id = p_run_id AND key = p_name FOR UPDATE;
    IF s.id IS NOT NULL AND s.input_hash <> p_input_hash THEN
        RETURN QUERY SELECT 'input_mismatch'::text, s;
        RETURN;
    ELSIF s.id IS NOT NULL AND s.status = 'completed' THEN
        RETURN QUERY SELECT 'return'::text, s;
        RETURN;
    ELSIF r.status = 'completed' THEN
        RAISE EXCEPTION 'run % is already completed', p_run_id USING ERRCODE = 'TB007';
    ELSIF r.status <> 'running' OR p_owner IS NULL OR r.lease_owner IS DISTINCT FROM p_owner THEN
        RAISE EXCEPTION 'lease on run % lost', p_run_id USING ERRCODE = 'TB003';
    END IF;
    IF s.id IS NOT NULL AND s.status = 'manual_review' THEN
        RAISE EXCEPTION 'step % of run % is parked for manual review', p_name, p_run_id USING ERRCODE = 'TB006';
    END IF;
    IF s.id IS NOT NULL AND s.status = 'running' AND s.lease_owner IS DISTINCT FROM p_owner THEN
        IF s.lease_expires_at > tidebase.now() THEN
            RETURN QUERY SELECT 'locked'::text, s;
            RETURN;
        END IF;
        IF coalesce(s.contract ->> 'replay', 'auto') <> 'auto' THEN
            v_seq := tidebase.next_seq(p_run_id);
            UPDATE tidebase.steps
               SET status = 'manual_review', resume_decision = 'manual_review', lease_owner = NULL,
                   lease_token = NULL, lease_expires_at = NULL, updated_at = tidebase.now(),
                   error = jsonb_build_object('message', 'step interrupted: its lease expired')
             WHERE run_id = p_run_id AND key = p_name
            RETURNING * INTO s;
            INSERT INTO tidebase.events (run_id, seq, type, payload)
            VALUES (p_run_id, v_seq, 'step.failed',
                    jsonb_build_object('stepId', s.id, 'name', s.name, 'retryable', false,
                                       'resumeDecision', 'manual_review', 'resumeContract', s.contract,
                                       'error', s.error));
            RETURN QUERY SELECT 'parked'::text, s;
            RETURN;
        END IF;
    END IF;
    -- execute: renew the run lease when live, take the step lease, append step.started.
    v_seq := tidebase.next_seq(p_run_id);
    UPDATE tidebase.runs
       SET lease_expires_at = tidebase.now() + lease_ms * interval '1 millisecond'
     WHERE id = p_run_id AND lease_expires_at > tidebase.now();
    v_expires := tidebase.now() + r.lease_ms * interval '1 millisecond';
    IF s.id IS NULL THEN
        INSERT INTO tidebase.steps (run_id, key, id, name, occurrence, input_hash, input, options, contract, status,
                                    attempt, lease_owner, lease_token, lease_expires_at, started_at)
        VALUES (p_run_id, p_name, tidebase.new_id('step_'), p_name, 1, p_input_hash, coalesce(p_input, '{}'),
                coalesce(p_options, '{}'), p_contract, 'running', 1, p_owner, r.fencing_token, v_expires,
                tidebase.now())
        RETURNING * INTO s;
    ELSE
        UPDATE tidebase.steps
           SET status = 'running', attempt = attempt + 1, input = coalesce(p_input, '{}'),
               options = coalesce(p_options, '{}'), contract = p_contract, lease_owner = p_owner,
               lease_token = r.fencing_token, lease_expires_at = v_expires,
               started_at = coalesce(started_at, tidebase.now()), updated_at = tidebase.now()
         WHERE run_id = p_run_id AND key = p_name
        RETURNING * INTO s;
    END IF;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'step.started',
            jsonb_build_object('stepId', s.id, 'name', s.name, 'attempt', s.attempt, 'resumeContract', p_contract));
    RETURN QUERY SELECT 'execute'::text, s;
END
$$;

-- Locks the run, finds step p_step_id of the run and checks the rules of wire §4.12 in order: TB001, TB008, TB004,
-- a completed step (returned when p_completing with the same output, else TB014), TB007, then TB003 unless p_owner
-- holds both the run and the step. Returns the step row.
CREATE FUNCTION tidebase.http_step_for_write(
    p_run_id text, p_step_id text, p_owner text, p_output jsonb, p_completing boolean
) RETURNS tidebase.steps
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    s tidebase.steps%ROWTYPE;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    END IF;
    SELECT * INTO s FROM tidebase.steps WHERE run_id = p_run_id AND id = p_step_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step % of run % not found', p_step_id, p_run_id USING ERRCODE = 'TB008';
    ELSIF r.status = 'cancelled' THEN
        RAISE EXCEPTION 'run % is cancelled', p_run_id USING ERRCODE = 'TB004', DETAIL = coalesce(r.cancel_reason, '');
    ELSIF s.status = 'completed' THEN
        IF p_completing AND s.output IS NOT DISTINCT FROM p_output THEN
            RETURN s;
        END IF;
        RAISE EXCEPTION 'step % of run % is already completed', p_step_id, p_run_id USING ERRCODE = 'TB014';
    ELSIF r.status = 'completed' THEN
        RAISE EXCEPTION 'run % is already completed', p_run_id USING ERRCODE = 'TB007';
    ELSIF r.status <> 'running' OR p_owner IS NULL OR r.lease_owner IS DISTINCT FROM p_owner
          OR s.status <> 'running' OR s.lease_owner IS DISTINCT FROM p_owner THEN
        RAISE EXCEPTION 'lease on run % or its step % lost', p_run_id, p_step_id USING ERRCODE = 'TB003';
    END IF;
    RETURN s;
END
$$;

-- Completes a step by id under the caller's run and step lease (wire §4.12); the same output again is a no-op.
CREATE FUNCTION tidebase.http_complete_step(p_run_id text, p_step_id text, p_owner text, p_output jsonb)
RETURNS SETOF tidebase.steps
LANGUAGE plpgsql AS $$
DECLARE
    s tidebase.steps%ROWTYPE := tidebase.http_step_for_write(p_run_id, p_step_id, p_owner, p_output, true);
    v_seq bigint;
BEGIN
    IF s.status = 'completed' THEN
        RETURN NEXT s;
        RETURN;
    END IF;
    v_seq := tidebase.next_seq(p_run_id);
    UPDATE tidebase.runs SET lease_expires_at = tidebase.now() + lease_ms * interval '1 millisecond'
     WHERE id = p_run_id AND lease_expires_at > tidebase.now();
    UPDATE tidebase.steps
       SET status = 'completed', output = p_output, error = NULL, lease_owner = NULL, lease_token = NULL,
           lease_expires_at = NULL, completed_at = tidebase.now(), updated_at = tidebase.now()
     WHERE run_id = p_run_id AND id = p_step_id
    RETURNING * INTO s;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'step.completed',
            jsonb_build_object('stepId', s.id, 'name', s.name, 'attempt', s.attempt,
                               'checkpointInvariant', s.contract -> 'checkpointInvariant',
                               'verifiedBy', s.contract -> 'verifiedBy'));
    RETURN NEXT s;
END
$$;

-- Fails a step by id under the caller's leases, classified as in wire §7.6.
CREATE FUNCTION tidebase.http_fail_step(
    p_run_id text, p_step_id text, p_owner text, p_error jsonb, p_retryable boolean, p_decision text
) RETURNS SETOF tidebase.steps
LANGUAGE plpgsql AS $$
DECLARE
    s tidebase.steps%ROWTYPE := tidebase.http_step_for_write(p_run_id, p_step_id, p_owner, NULL, false);
    v_seq bigint;
    v_decision text;
    v_status text;
BEGIN
    v_decision := coalesce(p_decision,
                           CASE WHEN p_retryable THEN 'auto_retry'
                                ELSE CASE coalesce(s.contract ->> 'replay', 'auto')
                                         WHEN 'manual' THEN 'manual_review'
                                         WHEN 'never' THEN 'fail_hard'
                                         ELSE 'safe_replay' END END);
    v_status := CASE WHEN p_retryable OR v_decision = 'auto_retry' THEN 'failed_retryable'
                     WHEN v_decision = 'manual_review' THEN 'manual_review'
                     ELSE 'failed' END;
    v_seq := tidebase.next_seq(p_run_id);
    UPDATE tidebase.runs SET lease_expires_at = tidebase.now() + lease_ms * interval '1 millisecond'
     WHERE id = p_run_id AND lease_expires_at > tidebase.now();
    UPDATE tidebase.steps
       SET status = v_status, error = p_error, resume_decision = v_decision, lease_owner = NULL, lease_token = NULL,
           lease_expires_at = NULL, updated_at = tidebase.now()
     WHERE run_id = p_run_id AND id = p_step_id
    RETURNING * INTO s;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'step.failed',
            jsonb_build_object('stepId', s.id, 'name', s.name, 'attempt', s.attempt, 'status', v_status,
                               'retryable', coalesce(p_retryable, false), 'resumeDecision', v_decision,
                               'resumeContract', s.contract, 'error', p_error));
    RETURN NEXT s;
END
$$;

-- Operator review of a parked step by id (wire §4.14): retry -> failed_retryable, complete -> completed with output.
CREATE FUNCTION tidebase.http_review_step(
    p_run_id text, p_step_id text, p_action text, p_output jsonb, p_actor text, p_reason text
) RETURNS SETOF tidebase.steps
LANGUAGE plpgsql AS $$
DECLARE
    s tidebase.steps%ROWTYPE;
BEGIN
    PERFORM tidebase.lock_run(p_run_id, NULL);  -- TB001 unknown, TB004 cancelled, TB007 completed
    SELECT * INTO s FROM tidebase.steps WHERE run_id = p_run_id AND id = p_step_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step % of run % not found', p_step_id, p_run_id USING ERRCODE = 'TB008';
    ELSIF s.status <> 'manual_review' THEN
        RAISE EXCEPTION 'step % of run % is not in manual review', p_step_id, p_run_id USING ERRCODE = 'TB015';
    END IF;
    PERFORM tidebase.review_step(p_run_id, s.key, CASE p_action WHEN 'complete' THEN 'skip' ELSE 'release' END,
                                 p_output, p_actor, p_reason);
    RETURN QUERY SELECT * FROM tidebase.steps WHERE run_id = p_run_id AND id = p_step_id;
END
$$;

-- The gate p_gate_id of run p_run_id for a resolve: TB001 unknown run, TB011 unknown gate (or another run's),
-- TB004/TB007 terminal run. Returns the gate row (with its token hash, for the caller's constant-time comparison).
CREATE FUNCTION tidebase.http_gate_for_resolve(p_run_id text, p_gate_id text) RETURNS SETOF tidebase.gates
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    END IF;
    PERFORM 1 FROM tidebase.gates WHERE run_id = p_run_id AND id = p_gate_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gate % of run % not found', p_gate_id, p_run_id USING ERRCODE = 'TB011';
    ELSIF r.status = 'cancelled' THEN
        RAISE EXCEPTION 'run % is cancelled', p_run_id USING ERRCODE = 'TB004', DETAIL = coalesce(r.cancel_reason, '');
    ELSIF r.status = 'completed' THEN
        RAISE EXCEPTION 'run % is already completed', p_run_id USING ERRCODE = 'TB007';
    END IF;
    RETURN QUERY SELECT * FROM tidebase.gates WHERE run_id = p_run_id AND id = p_gate_id;
END
$$;

-- Creates the child of (parent, edge name) once (tidebase.create_child), adding the caller's metadata under the
-- parentRunId / parentEdgeName keys (which win) to a new child, in the same transaction. Returns the full rows.
CREATE FUNCTION tidebase.http_create_child(
    p_parent_id text, p_edge_name text, p_edge_type text, p_edge_metadata jsonb, p_child_id text, p_workflow text,
    p_input jsonb, p_input_hash text, p_lease_ms integer, p_metadata jsonb
) RETURNS TABLE (child tidebase.runs, edge tidebase.run_edges, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    r tidebase.runs%ROWTYPE;
BEGIN
    SELECT * INTO c FROM tidebase.create_child(p_parent_id, NULL, p_edge_name, p_edge_type, p_edge_metadata,
                                               p_child_id, p_workflow, p_input, p_input_hash, p_lease_ms);
    r := c.child;
    IF c.created AND coalesce(p_metadata, '{}') <> '{}' THEN
        UPDATE tidebase.runs SET metadata = p_metadata || metadata WHERE id = r.id RETURNING * INTO r;
    END IF;
    RETURN QUERY SELECT r, c.edge, c.created;
END
$$;
