-- Tidebase schema, version 6: hardening found by fault injection, fuzzing and a first-hour user.
--
-- Each section below replaces functions of earlier versions (same signatures, CREATE OR REPLACE) or adds what a fix
-- needs; the section header says which defect it closes.

-- ---------------------------------------------------------------------------------------------------------------
-- Leases: owners identified by host, pid and process start time; takeover from a dead process; recovery of runs
-- whose lease expired.
--
-- A lease owner of the library names its process (host, pid, process start time; see tidebase._owners). When an
-- invocation finds the run leased by a process of its own host that no longer exists, it passes that owner as
-- p_dead_owner and takes the lease over at once instead of waiting for the expiry; the database only checks that the
-- lease is still that owner's (the judgement that the process is gone can only be made on its host), and the fencing
-- token refuses every later write of the old holder whatever the judgement was.
--
-- A holder that can be resumed by workers (its workflow is registered) says so with p_resume_queue: should its lease
-- expire while the run is off any queue, the reconciler puts the run on that queue for a worker to resume, exactly as
-- it does for a queued run whose worker died.

ALTER TABLE tidebase.runs ADD COLUMN resume_queue text;

DROP INDEX tidebase.runs_lease_expiry;
CREATE INDEX runs_lease_expiry ON tidebase.runs (lease_expires_at)
    WHERE status = 'running' AND (queue IS NOT NULL OR resume_queue IS NOT NULL);

-- Takes the lease of a run for p_owner: a new fencing token, attempt + 1, expiry = now + lease. Refuses a live lease
-- held by another owner (TB002: DETAIL the owner, HINT the expiry) unless that owner is p_dead_owner, whose lease is
-- then taken over and recorded as a recovery (reason owner_exited). Refuses a cancelled run (TB004). A completed run
-- is returned unchanged, with no lease. Recoveries still waiting for a worker are closed as resumed by p_owner.
CREATE FUNCTION tidebase.acquire_run(
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
    END IF;
    UPDATE tidebase.runs
       SET status = 'running', lease_owner = p_owner, fencing_token = fencing_token + 1,
           lease_ms = coalesce(p_lease_ms, lease_ms),
           lease_expires_at = v_now + coalesce(p_lease_ms, lease_ms) * interval '1 millisecond',
           attempt = attempt + 1, event_seq = event_seq + 1, updated_at = v_now,
           started_at = coalesce(started_at, v_now), resume_queue = coalesce(p_resume_queue, resume_queue)
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
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_id, r.event_seq, 'run.started',
            jsonb_build_object('leaseOwner', p_owner, 'attempt', r.attempt, 'fencingToken', r.fencing_token)
            || CASE WHEN v_takeover
                    THEN jsonb_build_object('takeover', jsonb_build_object(
                             'previousOwner', p_dead_owner, 'reason', 'owner_exited', 'recoveryId', v_rec,
                             'interruptedSteps', v_steps))
                    ELSE '{}'::jsonb END);
    PERFORM tidebase.ring(p_id);
    RETURN NEXT r;
END
$$;

-- The three-argument form (HTTP clients, which fence by owner and cannot be judged dead): no takeover.
CREATE OR REPLACE FUNCTION tidebase.acquire_run(p_id text, p_owner text, p_lease_ms integer)
RETURNS SETOF tidebase.runs
LANGUAGE sql AS $$
    SELECT * FROM tidebase.acquire_run(p_id, p_owner, p_lease_ms, NULL, NULL)
$$;

-- Handles up to p_limit runs whose lease expired and that a worker may resume (on a queue, or off any queue with a
-- resume_queue): back to their queue after backoff while attempts are left (at least 10: a crash is not a workflow
-- failure), recording a recovery; otherwise failed with `max_retries` (reason lease_expired). Returns the recoveries
-- of the requeued runs. Replaces version 5 (same signature).
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
                   lease_expires_at = NULL, event_seq = event_seq + 1, updated_at = v_now
             WHERE id = r.id;
            INSERT INTO tidebase.events (run_id, seq, type, payload)
            VALUES (r.id, r.event_seq + 1, 'run.failed',
                    jsonb_build_object('error', v_error, 'failureClass', 'max_retries', 'reason', 'lease_expired'));
            PERFORM tidebase.ring(r.id);
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
               lease_expires_at = NULL, event_seq = event_seq + 1, updated_at = v_now
         WHERE id = r.id;
        INSERT INTO tidebase.recoveries (run_id, id, reason, detected_by, detected_at, previous_owner, previous_token,
                                         interrupted_steps)
        VALUES (r.id, tidebase.new_id('rec_'), 'lease_expired', p_actor, v_now, r.lease_owner, r.fencing_token,
                v_steps)
        RETURNING * INTO v;
        INSERT INTO tidebase.events (run_id, seq, type, payload)
        VALUES (r.id, r.event_seq + 1, 'run.requeued',
                jsonb_build_object('reason', 'lease_expired', 'attempt', r.attempt, 'queue', v_queue,
                                   'maxAttempts', r.max_attempts, 'nextRunAt', v_next, 'recoveryId', v.id,
                                   'previousOwner', r.lease_owner, 'previousToken', r.fencing_token,
                                   'interruptedSteps', v_steps, 'detectedBy', p_actor));
        PERFORM tidebase.ring(r.id);
        PERFORM pg_notify('tidebase_queues', v_queue);
        RETURN NEXT v;
    END LOOP;
END
$$;

-- Operator recovery: puts a run that nobody is executing back on a queue now (its own, else p_queue), with a
-- recorded recovery (reason operator) and run.recovering. Accepted for failed, pending, waiting and queued runs, and
-- for running runs whose lease expired; anything else is refused with TB009 saying exactly why (a live lease and
-- when it expires; parked steps to release or skip; a terminal status). Returns the requeued run.
CREATE FUNCTION tidebase.recover_run(p_id text, p_actor text, p_queue text) RETURNS SETOF tidebase.runs
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
           event_seq = event_seq + 1, updated_at = v_now, lease_owner = NULL, lease_expires_at = NULL
     WHERE id = p_id
    RETURNING * INTO r;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_id, r.event_seq, 'run.recovering',
            jsonb_build_object('recoveryId', v_rec, 'reason', 'operator', 'actor', p_actor, 'queue', r.queue,
                               'previousStatus', v_previous));
    PERFORM tidebase.ring(p_id);
    PERFORM pg_notify('tidebase_queues', r.queue);
    RETURN NEXT r;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Deliveries: channel ids and no resolve token outside the outbox body.
--
-- The run detail listed every outbox column: its rendered channel deliveries showed the resolve token of gate.created
-- (payload.gate.resolveToken), and the library's listing returned secrets, bodies and sources as stored. A gate's
-- resolve token now exists in plain text only in the body of its gate.created deliveries (a body is sent
-- byte-identical on every try): the source a body is rendered from no longer carries it, and neither does a
-- receiver's answer or an error text that echoes it. A secret stays in its own column, which only the dispatcher's
-- claim reads. Listings read deliveries through tidebase.public_delivery, which returns neither the secret nor the
-- body, and the body's content only as a document with the token null.
--
-- A channel delivery names the run channel it goes to (channel_id, the `id` of that entry of runs.webhooks); a
-- delivery to an inline channel of a gate has none.

ALTER TABLE tidebase.outbox ADD COLUMN channel_id text;

-- Deliveries queued before this version: the run channel with the delivery's URL and secret, when exactly one has
-- them and no inline channel of the delivery's gate does too (a gate.created delivery could be to either).
UPDATE tidebase.outbox o
   SET channel_id = h ->> 'id'
  FROM tidebase.runs r, jsonb_array_elements(r.webhooks) h
 WHERE o.kind = 'channel' AND r.id = o.run_id AND coalesce(h ->> 'kind', 'channel') = 'channel'
   AND h ->> 'url' = o.url AND (h ->> 'secret') IS NOT DISTINCT FROM o.secret
   AND (SELECT count(*) FROM jsonb_array_elements(r.webhooks) w
         WHERE coalesce(w ->> 'kind', 'channel') = 'channel' AND w ->> 'url' = o.url
           AND (w ->> 'secret') IS NOT DISTINCT FROM o.secret) = 1
   AND NOT EXISTS (SELECT 1 FROM tidebase.gates g, jsonb_array_elements(g.channels) c
                    WHERE g.id = o.gate_id AND c ->> 'url' = o.url AND (c ->> 'secret') IS NOT DISTINCT FROM o.secret);

-- The resolve token in a delivery body: a gate.created body carries it under payload.gate once rendered, and under
-- payload before; null for every other body.
CREATE FUNCTION tidebase.body_token(p_body text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(b #>> '{payload,gate,resolveToken}', b #>> '{payload,resolveToken}')
      FROM (SELECT p_body::jsonb AS b) d
$$;

-- p_text with the resolve token of delivery body p_body replaced by `[redacted]`: for what a receiver answered and
-- for error texts, which may echo what was sent.
CREATE FUNCTION tidebase.redact_delivery(p_text text, p_body text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT replace(p_text, coalesce(tidebase.body_token(p_body), ''), '[redacted]')
$$;

-- What may be shown of delivery or webhook o: every column but its secret (`has_secret` says whether it has one),
-- its body and the source the body is rendered from. `message` is the body as a document, with the resolve token
-- null; the receiver's answer and the error text are redacted by tidebase.redact_delivery.
CREATE FUNCTION tidebase.public_delivery(o tidebase.outbox)
RETURNS TABLE (
    id bigint, public_id text, run_id text, kind text, event_type text, url text, channel_id text, gate_id text,
    event_seq bigint, reason text, auto boolean, has_secret boolean, message jsonb, status text, attempts integer,
    max_attempts integer, next_attempt_at timestamptz, http_status integer, response_body text, last_error text,
    created_at timestamptz, delivered_at timestamptz, completed_at timestamptz
)
LANGUAGE sql STABLE AS $$
    SELECT o.id, o.public_id, o.run_id, o.kind, o.event_type, o.url, o.channel_id, o.gate_id, o.event_seq, o.reason,
           o.auto, o.secret IS NOT NULL,
           jsonb_set(jsonb_set(o.body::jsonb, '{payload,resolveToken}', 'null', false),
                     '{payload,gate,resolveToken}', 'null', false),
           o.status, o.attempts, o.max_attempts, o.next_attempt_at, o.http_status,
           tidebase.redact_delivery(o.response_body, o.body), tidebase.redact_delivery(o.last_error, o.body),
           o.created_at, o.delivered_at, o.completed_at
$$;

-- Version 5's source of a channel delivery, without the resolve token of a gate.created payload: the token is in
-- the delivery's body, which the dispatcher renders the public body from together with this.
CREATE OR REPLACE FUNCTION tidebase.delivery_source(p_run_id text, p_type text, p_payload jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('payload', p_payload - 'resolveToken')
           || CASE WHEN p_type IN ('run.completed', 'run.failed', 'run.cancelled') THEN jsonb_build_object('run', (
                       SELECT to_jsonb(r) - 'webhooks' - 'recovery_secret' FROM tidebase.runs r WHERE r.id = p_run_id))
                   WHEN p_type = 'step.failed' THEN jsonb_build_object('step', (
                       SELECT to_jsonb(s) FROM tidebase.steps s
                        WHERE s.run_id = p_run_id AND s.id = p_payload ->> 'stepId'))
                   WHEN p_type IN ('gate.created', 'gate.resolved') THEN
                       jsonb_build_object('gate', tidebase.gate_document(p_payload ->> 'gateId'))
                   ELSE '{}'::jsonb END
$$;

-- Version 5's queue_webhooks, recording the run channel of each delivery: a hook that is an entry of the run's
-- webhooks is that channel; any other (an inline channel of a gate) is none, even when it has an id of its own.
CREATE OR REPLACE FUNCTION tidebase.queue_webhooks(
    p_run_id text, p_hooks jsonb, p_type text, p_payload jsonb, p_seq bigint DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    h jsonb;
    v_id text;
    v_source jsonb;
    v_run_hooks jsonb;
BEGIN
    IF p_hooks IS NULL OR jsonb_array_length(p_hooks) = 0 THEN
        RETURN;
    END IF;
    SELECT webhooks INTO v_run_hooks FROM tidebase.runs WHERE id = p_run_id;
    FOR h IN SELECT * FROM jsonb_array_elements(p_hooks) LOOP
        IF coalesce(h ->> 'kind', 'channel') = 'channel' AND EXISTS (
               SELECT 1 FROM jsonb_array_elements_text(coalesce(h -> 'only', nullif(h -> 'events', '[]'), '["*"]')) f
                WHERE f = '*' OR f = p_type OR (f LIKE '%.*' AND p_type LIKE left(f, -1) || '%')) THEN
            v_source := coalesce(v_source, tidebase.delivery_source(p_run_id, p_type, p_payload));
            v_id := tidebase.new_id('del_');
            INSERT INTO tidebase.outbox (run_id, kind, event_type, url, secret, body, gate_id, public_id, source,
                                         event_seq, channel_id)
            VALUES (p_run_id, 'channel', p_type, h ->> 'url', h ->> 'secret',
                    jsonb_build_object('type', p_type, 'runId', p_run_id, 'gateId', p_payload ->> 'gateId',
                                       'deliveryId', v_id, 'payload', p_payload)::text,
                    p_payload ->> 'gateId', v_id, v_source, p_seq,
                    CASE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(v_run_hooks, '[]')) w WHERE w = h)
                         THEN h ->> 'id' END);
        END IF;
    END LOOP;
END
$$;

-- Version 5's record_delivery, keeping the receiver's answer and the error text without the delivery's resolve
-- token (a receiver may echo what it was sent).
CREATE OR REPLACE FUNCTION tidebase.record_delivery(
    p_id bigint, p_attempt integer, p_started_at timestamptz, p_duration_ms integer, p_status_code integer,
    p_error text, p_ok boolean, p_retry boolean, p_retry_ms integer, p_response text, p_max_attempts integer
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    o tidebase.outbox%ROWTYPE;
BEGIN
    SELECT * INTO o FROM tidebase.outbox WHERE id = p_id;
    p_error := tidebase.redact_delivery(p_error, o.body);
    p_response := tidebase.redact_delivery(p_response, o.body);
    INSERT INTO tidebase.outbox_attempts (outbox_id, attempt, started_at, duration_ms, status_code, error, ok)
    VALUES (p_id, p_attempt, p_started_at, p_duration_ms, p_status_code, p_error, p_ok)
    ON CONFLICT DO NOTHING;
    UPDATE tidebase.outbox
       SET http_status = p_status_code, response_body = left(p_response, 8000),
           last_error = CASE WHEN p_ok THEN NULL ELSE p_error END
     WHERE id = p_id AND status = 'pending'
    RETURNING * INTO o;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF p_ok THEN
        UPDATE tidebase.outbox SET status = 'delivered', delivered_at = tidebase.now(), completed_at = tidebase.now()
         WHERE id = p_id;
        IF o.kind = 'recovery' AND o.run_id IS NOT NULL THEN
            PERFORM tidebase.recovery_event(o.run_id, 'recovery.delivered',
                                            jsonb_build_object('recoveryAttemptId', o.public_id,
                                                               'httpStatus', p_status_code));
        END IF;
    ELSIF p_retry AND o.attempts < least(o.max_attempts, coalesce(p_max_attempts, o.max_attempts)) THEN
        UPDATE tidebase.outbox SET next_attempt_at = tidebase.now() + p_retry_ms * interval '1 millisecond'
         WHERE id = p_id;
    ELSE
        PERFORM tidebase.close_delivery(o, p_status_code, p_error);
    END IF;
END
$$;

-- Answers and errors recorded before this version, and tokens in sources not yet rendered.
UPDATE tidebase.outbox
   SET response_body = tidebase.redact_delivery(response_body, body),
       last_error = tidebase.redact_delivery(last_error, body)
 WHERE kind = 'channel' AND event_type = 'gate.created';
UPDATE tidebase.outbox_attempts a
   SET error = tidebase.redact_delivery(a.error, o.body)
  FROM tidebase.outbox o
 WHERE o.id = a.outbox_id AND o.kind = 'channel' AND o.event_type = 'gate.created' AND a.error IS NOT NULL;
UPDATE tidebase.outbox SET source = jsonb_set(source, '{payload}', (source -> 'payload') - 'resolveToken')
 WHERE source #> '{payload,resolveToken}' IS NOT NULL;

-- ---------------------------------------------------------------------------------------------------------------
-- Forks and gates: children before the fork point replay; a resolved gate always answers GateAlreadyResolved.
--
-- `run.child` records its result on the child run, reached through the parent's edge, not as a step of the parent
-- (a fan-out also checkpoints its join as a step). Version 2 of fork_run copied steps, gates and state but no edge,
-- so a fork found no edge for a child called before its fork point and created and executed that child again. A fork
-- now copies the edges (not forks) whose child completed by the fork point, pointing at the same, completed child
-- run: the fork's run.child finds it and returns its stored result. A child that completed later, or not at all
-- (still running, failed), gets no edge in the fork and runs fresh there as a child of the fork, as does every child
-- after the fork point; the source's children are never driven by the fork.
--
-- resolve_gate locked the run with lock_run, which refuses a completed or cancelled run before the gate was read:
-- a loser queued behind the winner, or any later resolver, got RunCompleted once the winner's decision had resumed
-- and finished the run. The gate is now read first, under the run's row lock (every gate writer takes that lock
-- first), and a decided gate answers TB012 whatever its run did since; only a pending gate of a terminal run gets
-- the run's refusal. http_gate_for_resolve skips its terminal-run check for a decided gate for the same reason.

-- A step a fork copied stands for work its source run did: usage_from names the run whose usage records that
-- execution, so that when the fork replays the step it reports that usage as saved, as a resumed run does.
ALTER TABLE tidebase.steps ADD COLUMN usage_from text;

-- Copies the original usage of a step replayed from its checkpoint as saved usage of p_run_id: the run's own
-- records, or, for a step a fork copied, those of the run that executed it. Replaces version 2 (same signature).
CREATE OR REPLACE FUNCTION tidebase.record_saved_usage(p_run_id text, p_step_key text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_from text;
    v_count integer;
BEGIN
    SELECT coalesce(usage_from, run_id) INTO v_from FROM tidebase.steps WHERE run_id = p_run_id AND key = p_step_key;
    INSERT INTO tidebase.usage (run_id, id, step_key, kind, provider, model, label, unit, quantity, input_tokens,
                                output_tokens, total_tokens, cost_usd, metadata, saved, saved_from)
    SELECT p_run_id, tidebase.new_id('use_'), step_key, kind, provider, model, label, unit, quantity, input_tokens,
           output_tokens, total_tokens, cost_usd, metadata, true, id
      FROM tidebase.usage
     WHERE run_id = coalesce(v_from, p_run_id) AND step_key = p_step_key AND NOT saved;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Creates run p_new_id from run p_source_id: the source's completed checkpoints up to and including step p_at_key
-- (by completion order), its resolved gates, its state versions up to that point, the edges of its children that
-- had completed by then (the same child runs, so the fork replays their results), and an edge of type `fork`.
-- The source run and its children are not modified.
CREATE OR REPLACE FUNCTION tidebase.fork_run(
    p_source_id text, p_at_key text, p_new_id text, p_input jsonb, p_input_hash text
) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    src tidebase.runs%ROWTYPE;
    cut tidebase.steps%ROWTYPE;
    r tidebase.runs%ROWTYPE;
    v_seq bigint;
BEGIN
    SELECT * INTO src FROM tidebase.runs WHERE id = p_source_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_source_id USING ERRCODE = 'TB001';
    END IF;
    SELECT * INTO cut FROM tidebase.steps WHERE run_id = p_source_id AND key = p_at_key AND status = 'completed';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % has no completed step %', p_source_id, p_at_key USING ERRCODE = 'TB008';
    END IF;
    INSERT INTO tidebase.runs (id, workflow, input, input_hash, metadata, lease_ms, event_seq)
    VALUES (p_new_id, src.workflow, coalesce(p_input, src.input), coalesce(p_input_hash, src.input_hash),
            jsonb_build_object('forkedFrom', p_source_id, 'forkedAtStep', p_at_key), src.lease_ms, 0)
    RETURNING * INTO r;
    INSERT INTO tidebase.steps (run_id, key, id, name, occurrence, input_hash, contract, status, output, attempt,
                                started_at, completed_at, created_at, updated_at, usage_from)
    SELECT p_new_id, key, tidebase.new_id('step_'), name, occurrence, input_hash, contract, 'completed', output,
           attempt, started_at, completed_at, created_at, updated_at, coalesce(usage_from, p_source_id)
      FROM tidebase.steps
     WHERE run_id = p_source_id AND status = 'completed' AND (completed_at, key) <= (cut.completed_at, cut.key);
    INSERT INTO tidebase.gates (run_id, name, id, prompt, data, status, decision, actor, payload, token_hash,
                                capability, channels, created_at, updated_at, resolved_at)
    SELECT p_new_id, name, tidebase.new_id('gate_'), prompt, data, status, decision, actor, payload, token_hash,
           capability, channels, created_at, updated_at, resolved_at
      FROM tidebase.gates
     WHERE run_id = p_source_id AND status <> 'pending' AND resolved_at <= cut.completed_at;
    INSERT INTO tidebase.state_streams (run_id, name, id, target_type, target_id, current_version, current_value,
                                        metadata, created_at, updated_at)
    SELECT p_new_id, s.name, tidebase.new_id('stream_'), s.target_type,
           CASE WHEN s.target_type = 'run' THEN p_new_id ELSE s.target_id END, v.version, v.value, s.metadata,
           s.created_at, v.created_at
      FROM tidebase.state_streams s
      JOIN LATERAL (SELECT version, value, created_at FROM tidebase.state_versions
                     WHERE run_id = p_source_id AND stream = s.name AND created_at <= cut.completed_at
                     ORDER BY version DESC LIMIT 1) v ON true
     WHERE s.run_id = p_source_id;
    INSERT INTO tidebase.state_versions (run_id, stream, version, id, value, patch, label, reason, importance,
                                         metadata, step_key, created_by, created_at)
    SELECT p_new_id, v.stream, v.version, tidebase.new_id('ver_'), v.value, v.patch, v.label, v.reason,
           v.importance, v.metadata, v.step_key, v.created_by, v.created_at
      FROM tidebase.state_versions v
     WHERE v.run_id = p_source_id AND v.created_at <= cut.completed_at;
    -- A child's result is part of the fork's past once the child completed by the fork point (a sequential parent
    -- gets it before the step that follows). Edges of a fork's inherited children are copied on, so a fork of a fork
    -- replays them too.
    INSERT INTO tidebase.run_edges (parent_run_id, name, id, child_run_id, edge_type, metadata, created_at)
    SELECT p_new_id, e.name, tidebase.new_id('edge_'), e.child_run_id, e.edge_type, e.metadata, e.created_at
      FROM tidebase.run_edges e
      JOIN tidebase.runs c ON c.id = e.child_run_id
     WHERE e.parent_run_id = p_source_id AND e.edge_type <> 'fork'
       AND c.status = 'completed' AND c.completed_at <= cut.completed_at;
    INSERT INTO tidebase.run_edges (parent_run_id, name, id, child_run_id, edge_type, metadata)
    VALUES (p_source_id, 'fork:' || p_new_id, tidebase.new_id('edge_'), p_new_id, 'fork',
            jsonb_build_object('atStep', p_at_key));
    v_seq := tidebase.next_seq(p_new_id);
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_new_id, v_seq, 'run.created',
            jsonb_build_object('workflowName', r.workflow, 'input', r.input, 'forkedFrom', p_source_id,
                               'forkedAtStep', p_at_key));
    SELECT * INTO r FROM tidebase.runs WHERE id = p_new_id;
    RETURN NEXT r;
END
$$;

-- Resolves a pending gate exactly once. A gate that already has a decision raises TB012 (DETAIL the decision, HINT
-- the actor), whatever its run did since; a pending gate of a completed or cancelled run refuses with the run's
-- state (TB007 / TB004). A queued run that was suspended at its gates and has none pending any more goes back to its
-- queue, so a worker resumes it.
CREATE OR REPLACE FUNCTION tidebase.resolve_gate(
    p_gate_id text, p_decision text, p_actor text, p_payload jsonb
) RETURNS SETOF tidebase.gates
LANGUAGE plpgsql AS $$
DECLARE
    v_run_id text;
    g tidebase.gates%ROWTYPE;
    r tidebase.runs%ROWTYPE;
    v_seq bigint;
BEGIN
    SELECT run_id INTO v_run_id FROM tidebase.gates WHERE id = p_gate_id;
    -- The run row first (the lock order), whatever the run's status: queued here, a loser of a race reads the gate
    -- only once the winner committed. No row is locked for an unknown gate.
    SELECT * INTO r FROM tidebase.runs WHERE id = v_run_id FOR NO KEY UPDATE;
    SELECT * INTO g FROM tidebase.gates WHERE id = p_gate_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gate % not found', p_gate_id USING ERRCODE = 'TB011';
    ELSIF g.status <> 'pending' AND r.status = 'cancelled' AND g.decision = 'canceled'
          AND g.resolved_at >= r.cancelled_at THEN
        RAISE EXCEPTION 'gate % was canceled with its run % (cancelled)', p_gate_id, g.run_id
            USING ERRCODE = 'TB012', DETAIL = g.decision, HINT = coalesce(g.actor, '');
    ELSIF g.status <> 'pending' THEN
        RAISE EXCEPTION 'gate % is already resolved (% by %)', p_gate_id, g.decision, coalesce(g.actor, 'an operator')
            USING ERRCODE = 'TB012', DETAIL = g.decision, HINT = coalesce(g.actor, '');
    ELSIF r.status IN ('cancelled', 'completed') THEN
        PERFORM tidebase.refuse(g.run_id, NULL);
    END IF;
    UPDATE tidebase.gates
       SET status = p_decision, decision = p_decision, actor = p_actor, payload = coalesce(p_payload, '{}'),
           resolved_at = tidebase.now(), updated_at = tidebase.now()
     WHERE id = p_gate_id
    RETURNING * INTO g;
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

-- The gate p_gate_id of run p_run_id for a resolve: TB001 unknown run, TB011 unknown gate (or another run's),
-- TB004/TB007 for a pending gate of a terminal run (a decided gate is left to resolve_gate, which answers TB012).
-- Returns the gate row (with its token hash, for the caller's constant-time comparison).
CREATE OR REPLACE FUNCTION tidebase.http_gate_for_resolve(p_run_id text, p_gate_id text)
RETURNS SETOF tidebase.gates
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    g tidebase.gates%ROWTYPE;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    END IF;
    SELECT * INTO g FROM tidebase.gates WHERE run_id = p_run_id AND id = p_gate_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gate % of run % not found', p_gate_id, p_run_id USING ERRCODE = 'TB011';
    ELSIF g.status = 'pending' AND r.status IN ('cancelled', 'completed') THEN
        PERFORM tidebase.refuse(p_run_id, NULL);
    END IF;
    RETURN NEXT g;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Reading across runs (the Studio, and the same public reads of the library): the newest gate decisions and the
-- usage of a time range are served by index ranges, so they cost the same on a million runs as on ten.

CREATE INDEX gates_decided ON tidebase.gates (resolved_at DESC, id DESC) WHERE status <> 'pending';
CREATE INDEX usage_created ON tidebase.usage (created_at);
