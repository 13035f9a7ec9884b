-- Tidebase schema, version 5: pull and push dispatch, recovery webhooks, channel deliveries, event objects and
-- schedules as the HTTP API states them (wire-api.md §4.26-4.31, §5.2, §6, §7.7).
--
-- *Claims* lock every named queue's config row in one canonical (sorted) order before taking anything, so two
-- claimers that list overlapping queues in different orders cannot deadlock; runs are then taken queue by queue in
-- the caller's order. The rate cap is a sliding window: the runs of the queue claimed within the window (claimed_at),
-- counted under the config row lock. A ready run whose deadline passed is cancelled instead of being handed out.
--
-- *Recovery webhooks* (`run.resume`, to a run's recovery_webhook) and *invoke webhooks* (`run.invoke`, to a queue's
-- invoke_url) are outbox rows of kind `recovery`, decided in SQL in the transaction that decides them, each with a
-- public id (`rec_`) and a `recovery.started` event. Automatic ones (a final failure, an expired lease of a run that
-- is not on a queue) are spaced and capped per run: none while another is pending, the k-th waits
-- min(3600, 60 * 2^(k-2)) s after the previous one was created, at most tidebase.max_auto_recoveries (10). Before
-- each try the dispatcher's claim re-reads the run and closes a superseded webhook instead of sending it; the final
-- outcome appends `recovery.delivered` or `recovery.failed`.
--
-- *Lease expiry* of a queued run requeues it (with backoff) while it has attempts left, counting at least 10: a crash
-- is not a workflow failure, but a run that keeps killing its workers ends `failed` (`max_retries`) instead of being
-- requeued forever. Events take the names of the HTTP API: run.enqueued, run.claimed, run.requeued.
--
-- *Channel deliveries* capture, at commit, the objects their event reports (delivery_source); the dispatcher renders
-- the public body once before the first try. A first try waits until every earlier delivery of the run to the same
-- URL has had its own. *Events* carry the objects they report (events_objects), so the HTTP API can show their public
-- forms. *Deadlines* are applied by begin and steps/begin too, not only by the reconciler.

ALTER TABLE tidebase.runs
    ADD COLUMN claimed_at        timestamptz,
    ADD COLUMN recovery_webhook  text,
    ADD COLUMN recovery_secret   text;
CREATE INDEX runs_queue_claimed ON tidebase.runs (queue, claimed_at) WHERE claimed_at IS NOT NULL;
-- Claim order is priority, availability, creation, id: the index serves it whole, so a claim reads only the runs it
-- takes, however long the backlog.
DROP INDEX tidebase.runs_queue_due;
CREATE INDEX runs_queue_due ON tidebase.runs (queue, priority DESC, available_at, created_at, id)
    WHERE status = 'queued';
CREATE INDEX runs_queue_status ON tidebase.runs (queue, status) WHERE queue IS NOT NULL;
CREATE INDEX runs_webhook_lease_expiry ON tidebase.runs (lease_expires_at)
    WHERE status = 'running' AND queue IS NULL AND recovery_webhook IS NOT NULL;

ALTER TABLE tidebase.queue_config
    ADD COLUMN invoke_url text,
    DROP COLUMN window_start,
    DROP COLUMN window_count;
CREATE INDEX queue_config_push ON tidebase.queue_config (queue) WHERE invoke_url IS NOT NULL;

ALTER TABLE tidebase.schedules ADD COLUMN last_enqueued_at timestamptz;

ALTER TABLE tidebase.outbox
    ADD COLUMN public_id      text,
    ADD COLUMN reason         text,
    ADD COLUMN auto           boolean NOT NULL DEFAULT false,
    ADD COLUMN gate_id        text,
    ADD COLUMN http_status    integer,
    ADD COLUMN response_body  text,
    ADD COLUMN completed_at   timestamptz,
    ADD COLUMN source         jsonb,
    ADD COLUMN event_seq      bigint;
UPDATE tidebase.outbox
   SET public_id = tidebase.new_id(CASE kind WHEN 'recovery' THEN 'rec_' ELSE 'del_' END),
       completed_at = CASE WHEN status <> 'pending' THEN coalesce(delivered_at, tidebase.now()) END;
ALTER TABLE tidebase.outbox
    ALTER COLUMN public_id SET DEFAULT tidebase.new_id('del_'),
    ALTER COLUMN public_id SET NOT NULL;
ALTER TABLE tidebase.outbox ALTER COLUMN max_attempts SET DEFAULT 10;
CREATE UNIQUE INDEX outbox_public_id ON tidebase.outbox (public_id);
CREATE INDEX outbox_pending_recovery ON tidebase.outbox (run_id) WHERE kind = 'recovery' AND status = 'pending';

-- The automatic-recovery cap per run; a session may lower or raise it (SET tidebase.max_auto_recoveries = n).
CREATE FUNCTION tidebase.max_auto_recoveries() RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('tidebase.max_auto_recoveries', true), '')::integer, 10)
$$;

-- Appends a recovery.* event to run p_run_id (locking its row, if the caller does not hold it yet).
CREATE FUNCTION tidebase.recovery_event(p_run_id text, p_type text, p_payload jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, tidebase.next_seq(p_run_id), p_type, p_payload);
END
$$;

-- Schedules a `run.resume` webhook to the run's recovery_webhook with reason p_reason, in the caller's transaction,
-- which holds the run row lock. Automatic ones (p_auto) obey the policy in the header and may be declined (no row
-- returned); a manual one is always created and is neither spaced nor counted. Raises TB001 for an unknown run.
CREATE FUNCTION tidebase.schedule_recovery(p_run_id text, p_reason text, p_auto boolean)
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
        IF v_count >= tidebase.max_auto_recoveries() THEN
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
    PERFORM tidebase.recovery_event(p_run_id, 'recovery.started',
                                    jsonb_build_object('recoveryAttemptId', o.public_id, 'reason', p_reason));
    RETURN NEXT o;
END
$$;

-- The run trigger of version 4, passing each event's seq to its deliveries.
CREATE OR REPLACE FUNCTION tidebase.runs_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    e tidebase.events%ROWTYPE;
    v_from bigint := CASE WHEN TG_OP = 'INSERT' THEN 0 ELSE OLD.event_seq END;
BEGIN
    FOR e IN SELECT * FROM tidebase.events
              WHERE run_id = NEW.id AND seq > v_from AND seq <= NEW.event_seq ORDER BY seq LOOP
        IF e.type <> 'gate.created' THEN  -- queued by begin_gate_v2, which alone knows the resolve token
            PERFORM tidebase.queue_webhooks(NEW.id, NEW.webhooks, e.type, e.payload, e.seq);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- Manual recovery (POST /runs/:id/recover): the run row locked, terminal runs refused (lock_run: TB001, TB004,
-- TB007), then a run.resume webhook. No row when the run has no recovery webhook.
CREATE FUNCTION tidebase.request_recovery(p_run_id text, p_reason text) RETURNS SETOF tidebase.outbox
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tidebase.lock_run(p_run_id, NULL);
    RETURN QUERY SELECT * FROM tidebase.schedule_recovery(p_run_id, p_reason, false);
END
$$;

-- The gate row as a document without secrets: no token hash, and its channels say only whether they have one.
CREATE FUNCTION tidebase.gate_document(p_gate_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT (to_jsonb(g) - 'token_hash' - 'channels')
           || jsonb_build_object('channels', coalesce((
                  SELECT jsonb_agg((c - 'secret') || jsonb_build_object('hasSecret', c ? 'secret'))
                    FROM jsonb_array_elements(g.channels) c), '[]'))
      FROM tidebase.gates g WHERE g.id = p_gate_id
$$;

-- What a channel delivery of event p_type reports, captured when the event commits: the event's payload plus the
-- run (run.* types), the step (step.failed) or the gate (gate.* types) as they are now, without secrets. The
-- dispatcher renders the public body from it once, before the first try (tidebase.render), and keeps that body for
-- every retry.
CREATE FUNCTION tidebase.delivery_source(p_run_id text, p_type text, p_payload jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('payload', p_payload)
           || CASE WHEN p_type IN ('run.completed', 'run.failed', 'run.cancelled') THEN jsonb_build_object('run', (
                       SELECT to_jsonb(r) - 'webhooks' - 'recovery_secret' FROM tidebase.runs r WHERE r.id = p_run_id))
                   WHEN p_type = 'step.failed' THEN jsonb_build_object('step', (
                       SELECT to_jsonb(s) FROM tidebase.steps s
                        WHERE s.run_id = p_run_id AND s.id = p_payload ->> 'stepId'))
                   WHEN p_type IN ('gate.created', 'gate.resolved') THEN
                       jsonb_build_object('gate', tidebase.gate_document(p_payload ->> 'gateId'))
                   ELSE '{}'::jsonb END
$$;

-- Channel webhooks only: recovery webhooks are decided explicitly (schedule_recovery), never by event type. A
-- channel's filter is its `only` list when present (channels of the HTTP API with no `events`: the delivered types),
-- else its `events`, where an empty list means every type. Body: {type, runId, gateId, deliveryId, payload} (wire §6.2);
-- the body written here carries the event's payload as stored, and the dispatcher replaces it with the public form
-- rendered from `source` before the first try. p_seq is the event's seq (the x-tidebase-event-seq header) when the
-- caller knows it. Callers of the four-argument version (version 4's functions) resolve to this one.
DROP FUNCTION tidebase.queue_webhooks(text, jsonb, text, jsonb);
CREATE FUNCTION tidebase.queue_webhooks(
    p_run_id text, p_hooks jsonb, p_type text, p_payload jsonb, p_seq bigint DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    h jsonb;
    v_id text;
    v_source jsonb;
BEGIN
    IF p_hooks IS NULL OR jsonb_array_length(p_hooks) = 0 THEN
        RETURN;
    END IF;
    FOR h IN SELECT * FROM jsonb_array_elements(p_hooks) LOOP
        IF coalesce(h ->> 'kind', 'channel') = 'channel' AND EXISTS (
               SELECT 1 FROM jsonb_array_elements_text(coalesce(h -> 'only', nullif(h -> 'events', '[]'), '["*"]')) f
                WHERE f = '*' OR f = p_type OR (f LIKE '%.*' AND p_type LIKE left(f, -1) || '%')) THEN
            v_source := coalesce(v_source, tidebase.delivery_source(p_run_id, p_type, p_payload));
            v_id := tidebase.new_id('del_');
            INSERT INTO tidebase.outbox (run_id, kind, event_type, url, secret, body, gate_id, public_id, source,
                                         event_seq)
            VALUES (p_run_id, 'channel', p_type, h ->> 'url', h ->> 'secret',
                    jsonb_build_object('type', p_type, 'runId', p_run_id, 'gateId', p_payload ->> 'gateId',
                                       'deliveryId', v_id, 'payload', p_payload)::text,
                    p_payload ->> 'gateId', v_id, v_source, p_seq);
        END IF;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Enqueue (replaces version 4, with an absolute availability time and a recovery webhook).

DROP FUNCTION tidebase.fire_schedule(text, timestamptz, timestamptz[], timestamptz, text, integer);
DROP FUNCTION tidebase.enqueue_run(text, text, jsonb, text, jsonb, text, integer, text, bigint, integer, integer,
                                   timestamptz, integer, jsonb);

-- Creates a queued run available from p_run_at, or returns the active run that holds (queue, dedupe key), or the
-- run with this id (created = false). TB005 when the id exists for another workflow. Appends run.enqueued.
CREATE FUNCTION tidebase.enqueue_run(
    p_id text, p_workflow text, p_input jsonb, p_input_hash text, p_metadata jsonb, p_queue text, p_priority integer,
    p_dedupe_key text, p_run_at timestamptz, p_max_attempts integer, p_backoff_ms integer, p_deadline timestamptz,
    p_lease_ms integer, p_webhooks jsonb, p_recovery_webhook text, p_recovery_secret text,
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
                                   webhooks, recovery_webhook, recovery_secret)
        VALUES (p_id, p_workflow, 'queued', coalesce(p_input, '{}'), p_input_hash, coalesce(p_metadata, '{}'),
                coalesce(p_lease_ms, 30000), 1, p_queue, coalesce(p_priority, 0), p_dedupe_key,
                coalesce(p_run_at, tidebase.now()), coalesce(p_max_attempts, 1), coalesce(p_backoff_ms, 1000),
                p_deadline, coalesce(p_webhooks, '[]'), p_recovery_webhook, p_recovery_secret)
        ON CONFLICT DO NOTHING
        RETURNING * INTO run;
        IF FOUND THEN
            INSERT INTO tidebase.events (run_id, seq, type, payload)
            VALUES (p_id, 1, 'run.enqueued',
                    jsonb_build_object('queue', p_queue, 'runAt', run.available_at, 'workflowName', p_workflow,
                                       'input', run.input, 'dedupeKey', p_dedupe_key)
                    || jsonb_strip_nulls(jsonb_build_object('schedule', p_metadata -> 'schedule',
                                                            'fireTime', p_metadata -> 'fireTime')));
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

-- ---------------------------------------------------------------------------------------------------------------
-- Claims (replaces version 4; same signature).

-- How many more runs queue config c admits now: concurrency minus running, rate minus claims in the window (NULL
-- caps are unlimited). The caller holds the config row lock.
CREATE FUNCTION tidebase.queue_capacity(c tidebase.queue_config, p_now timestamptz) RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_n integer := 2147483647;
BEGIN
    IF c.paused THEN
        RETURN 0;
    END IF;
    IF c.concurrency IS NOT NULL THEN
        v_n := least(v_n, c.concurrency - (SELECT count(*) FROM tidebase.runs
                                             WHERE queue = c.queue AND status = 'running'));
    END IF;
    IF c.rate_limit IS NOT NULL THEN
        v_n := least(v_n, c.rate_limit - (SELECT count(*) FROM tidebase.runs
                                            WHERE queue = c.queue AND claimed_at IS NOT NULL
                                              AND claimed_at > p_now - c.rate_window_ms * interval '1 millisecond'));
    END IF;
    RETURN greatest(v_n, 0);
END
$$;

-- Cancels the ready runs of queue p_queue whose deadline has passed (they are never handed out).
CREATE FUNCTION tidebase.cancel_overdue_ready(p_queue text, p_now timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_id text;
BEGIN
    -- spelled to match the partial index runs_deadline, so the scan covers overdue runs only, not the backlog
    FOR v_id IN SELECT id FROM tidebase.runs
                 WHERE deadline_at IS NOT NULL AND status IN ('pending', 'queued', 'running', 'waiting')
                   AND deadline_at < p_now AND status = 'queued' AND queue = p_queue AND available_at <= p_now
                   FOR UPDATE SKIP LOCKED LOOP
        PERFORM tidebase.cancel_run(v_id, 'deadline', 'reconciler');
    END LOOP;
END
$$;

-- Up to p_limit ready runs of queue p_queue (and workflows; NULL = any), locked, in claim order: priority, then
-- availability, creation, id (the order of index runs_queue_due). Rows other sessions hold are skipped.
CREATE FUNCTION tidebase.ready_runs(p_queue text, p_now timestamptz, p_limit integer, p_workflows text[])
RETURNS SETOF text
LANGUAGE sql AS $$
    SELECT id FROM tidebase.runs
     WHERE status = 'queued' AND queue = p_queue AND available_at <= p_now
       AND (p_workflows IS NULL OR workflow = ANY (p_workflows))
     ORDER BY priority DESC, available_at, created_at, id
     LIMIT p_limit
       FOR UPDATE SKIP LOCKED
$$;

-- Claims up to p_limit due runs of the given queues (and workflows; NULL = any) for p_owner: config rows locked in
-- sorted order first, then queues served in the caller's order under their caps; runs taken by priority, then
-- availability, with SKIP LOCKED; each gets a new fencing token and lease, attempt + 1, claimed_at, and run.claimed.
CREATE OR REPLACE FUNCTION tidebase.claim_runs(
    p_owner text, p_queues text[], p_workflows text[], p_limit integer, p_lease_ms integer
) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    q text;
    c tidebase.queue_config%ROWTYPE;
    r tidebase.runs%ROWTYPE;
    v_id text;
    v_left integer := p_limit;
    v_n integer;
    v_now timestamptz := tidebase.now();
BEGIN
    INSERT INTO tidebase.queue_config (queue)
    SELECT DISTINCT x FROM unnest(p_queues) AS x ORDER BY x
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM tidebase.queue_config WHERE queue = ANY (p_queues) ORDER BY queue FOR UPDATE;
    FOR q IN SELECT x FROM unnest(p_queues) WITH ORDINALITY AS u (x, n) GROUP BY x ORDER BY min(n) LOOP
        EXIT WHEN v_left <= 0;
        SELECT * INTO c FROM tidebase.queue_config WHERE queue = q;
        PERFORM tidebase.cancel_overdue_ready(q, v_now);
        v_n := least(v_left, tidebase.queue_capacity(c, v_now));
        CONTINUE WHEN v_n <= 0;
        -- one row at a time, in claim order, so the answer lists the runs in the order they were taken
        FOR v_id IN SELECT * FROM tidebase.ready_runs(q, v_now, v_n, p_workflows) LOOP
            UPDATE tidebase.runs
               SET status = 'running', lease_owner = p_owner, fencing_token = fencing_token + 1,
                   lease_ms = coalesce(p_lease_ms, lease_ms),
                   lease_expires_at = v_now + coalesce(p_lease_ms, lease_ms) * interval '1 millisecond',
                   attempt = attempt + 1, event_seq = event_seq + 1, updated_at = v_now, claimed_at = v_now,
                   started_at = coalesce(started_at, v_now)
             WHERE id = v_id
            RETURNING * INTO r;
            INSERT INTO tidebase.events (run_id, seq, type, payload)
            VALUES (r.id, r.event_seq, 'run.claimed',
                    jsonb_build_object('leaseOwner', p_owner, 'queue', q, 'attempt', r.attempt,
                                       'fencingToken', r.fencing_token));
            PERFORM tidebase.ring(r.id);
            UPDATE tidebase.recoveries
               SET outcome = 'resumed', resumed_by = p_owner, resumed_at = v_now, resumed_token = r.fencing_token
             WHERE run_id = r.id AND outcome = 'requeued';
            v_left := v_left - 1;
            RETURN NEXT r;
        END LOOP;
    END LOOP;
END
$$;

-- Push dispatch (wire §7.7): for each queue with an invoke_url, up to min(10, capacity) ready runs are offered to the
-- application by a `run.invoke` webhook; each stays `queued` but becomes available again only 60 s later (claimed_at
-- counts it against the rate cap). Returns the outbox rows created.
CREATE FUNCTION tidebase.dispatch_push(p_limit integer) RETURNS SETOF tidebase.outbox
LANGUAGE plpgsql AS $$
DECLARE
    c tidebase.queue_config%ROWTYPE;
    r tidebase.runs%ROWTYPE;
    o tidebase.outbox%ROWTYPE;
    v_now timestamptz := tidebase.now();
    v_n integer;
BEGIN
    FOR c IN SELECT * FROM tidebase.queue_config WHERE invoke_url IS NOT NULL ORDER BY queue
               FOR UPDATE SKIP LOCKED LOOP
        PERFORM tidebase.cancel_overdue_ready(c.queue, v_now);
        v_n := least(10, p_limit, tidebase.queue_capacity(c, v_now));
        CONTINUE WHEN v_n <= 0;
        FOR r IN
            UPDATE tidebase.runs
               SET available_at = v_now + interval '60 seconds', claimed_at = v_now, updated_at = v_now
             WHERE id IN (SELECT * FROM tidebase.ready_runs(c.queue, v_now, v_n, NULL))
            RETURNING *
        LOOP
            INSERT INTO tidebase.outbox (run_id, kind, event_type, url, secret, body, public_id, reason)
            VALUES (r.id, 'recovery', 'run.invoke', c.invoke_url, NULL,
                    jsonb_build_object('type', 'run.invoke', 'runId', r.id, 'workflowName', r.workflow,
                                       'reason', 'queue_dispatch', 'attempt', r.attempt)::text,
                    tidebase.new_id('rec_'), 'queue_dispatch')
            RETURNING * INTO o;
            PERFORM tidebase.recovery_event(r.id, 'recovery.started',
                                            jsonb_build_object('recoveryAttemptId', o.public_id,
                                                               'reason', 'queue_dispatch'));
            RETURN NEXT o;
        END LOOP;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Failure (replaces version 4; same signature): run.requeued, and a run_failed recovery webhook on a final failure.

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
        PERFORM tidebase.schedule_recovery(p_id, 'run_failed', true);
    END IF;
    RETURN QUERY SELECT * FROM tidebase.runs WHERE id = p_id;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Lease expiry (replaces version 4; same signature).

-- Handles up to p_limit queued runs whose lease expired: back to the queue after backoff while attempts are left
-- (at least 10, see the header), recording a recovery; otherwise failed with `max_retries` and event run.failed
-- (reason lease_expired). Returns the recoveries of the requeued runs.
CREATE OR REPLACE FUNCTION tidebase.recover_expired(p_actor text, p_limit integer) RETURNS SETOF tidebase.recoveries
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    v tidebase.recoveries%ROWTYPE;
    v_now timestamptz := tidebase.now();  -- a value, not a volatile call, so the index range is bounded by it
    v_steps jsonb;
    v_next timestamptz;
    v_error jsonb := '{"message": "lease expired with no attempts remaining"}';
BEGIN
    FOR r IN SELECT * FROM tidebase.runs
              WHERE status = 'running' AND queue IS NOT NULL AND lease_expires_at < v_now
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
        SELECT coalesce(jsonb_agg(key ORDER BY key), '[]') INTO v_steps
          FROM tidebase.steps WHERE run_id = r.id AND status = 'running';
        -- the first crash is retried at once; repeated ones back off like failures do
        v_next := v_now + CASE WHEN r.attempt <= 1 THEN interval '0'
                               ELSE least(r.retry_backoff_ms * power(2, r.attempt - 2), 3600000)
                                    * interval '1 millisecond' END;
        UPDATE tidebase.runs
           SET status = 'queued', available_at = v_next, lease_owner = NULL, lease_expires_at = NULL,
               event_seq = event_seq + 1, updated_at = v_now
         WHERE id = r.id;
        INSERT INTO tidebase.recoveries (run_id, id, reason, detected_by, detected_at, previous_owner, previous_token,
                                         interrupted_steps)
        VALUES (r.id, tidebase.new_id('rec_'), 'lease_expired', p_actor, v_now, r.lease_owner, r.fencing_token,
                v_steps)
        RETURNING * INTO v;
        INSERT INTO tidebase.events (run_id, seq, type, payload)
        VALUES (r.id, r.event_seq + 1, 'run.requeued',
                jsonb_build_object('reason', 'lease_expired', 'attempt', r.attempt,
                                   'maxAttempts', r.max_attempts, 'nextRunAt', v_next, 'recoveryId', v.id,
                                   'previousOwner', r.lease_owner, 'previousToken', r.fencing_token,
                                   'interruptedSteps', v_steps, 'detectedBy', p_actor));
        PERFORM tidebase.ring(r.id);
        PERFORM pg_notify('tidebase_queues', r.queue);
        RETURN NEXT v;
    END LOOP;
END
$$;

-- Schedules a `lease_expired` recovery webhook for up to p_limit runs that are not on a queue, have a recovery
-- webhook, and whose lease expired, under the automatic policy; they stay `running` and anyone may take them over.
-- Returns the run ids for which a webhook was scheduled.
CREATE FUNCTION tidebase.recover_expired_webhooks(p_limit integer) RETURNS SETOF text
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
                      WHERE o.run_id = runs.id AND o.kind = 'recovery' AND o.auto) < tidebase.max_auto_recoveries()
              ORDER BY lease_expires_at
              LIMIT p_limit
                FOR UPDATE SKIP LOCKED LOOP
        IF EXISTS (SELECT 1 FROM tidebase.schedule_recovery(r.id, 'lease_expired', true)) THEN
            RETURN NEXT r.id;
        END IF;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Schedules (fire_schedule replaces version 4): the run of a fire is deduplicated by `sched:<name>:<fire time>`.

CREATE FUNCTION tidebase.fire_schedule(
    p_name text, p_fire_at timestamptz, p_missed timestamptz[], p_next timestamptz, p_actor text, p_lease_ms integer
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    s tidebase.schedules%ROWTYPE;
    v_id text;
    v_fire text := to_char(p_fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
BEGIN
    UPDATE tidebase.schedules
       SET next_fire_at = p_next, last_fire_at = p_fire_at, last_enqueued_at = tidebase.now(),
           updated_at = tidebase.now()
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
                                 jsonb_build_object('schedule', p_name, 'fireTime', v_fire), s.queue, s.priority,
                                 'sched:' || p_name || ':' || v_fire, NULL, s.max_attempts, 1000, NULL, p_lease_ms,
                                 '[]', NULL, NULL);
    INSERT INTO tidebase.schedule_fires (schedule, fire_at, status, run_id, fired_by)
    VALUES (p_name, p_fire_at, 'enqueued', v_id, p_actor)
    ON CONFLICT DO NOTHING;
    RETURN v_id;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Outbox delivery (replaces version 4): supersession before every try, wire retry rules, final recovery events.

-- Closes outbox row o as failed with p_error, appending recovery.failed for a recovery or invoke webhook.
CREATE FUNCTION tidebase.close_delivery(o tidebase.outbox, p_status integer, p_error text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tidebase.outbox
       SET status = 'dead', last_error = p_error, http_status = coalesce(p_status, http_status),
           completed_at = tidebase.now()
     WHERE id = o.id;
    IF o.kind = 'recovery' AND o.run_id IS NOT NULL THEN
        PERFORM tidebase.recovery_event(o.run_id, 'recovery.failed',
                                        jsonb_strip_nulls(jsonb_build_object('recoveryAttemptId', o.public_id,
                                                                             'httpStatus', p_status,
                                                                             'error', CASE WHEN p_status IS NULL
                                                                                           THEN p_error END)));
    END IF;
END
$$;

DROP FUNCTION tidebase.claim_deliveries(integer, integer);

-- Claims up to p_limit due deliveries for one dispatcher: each is pushed p_hold_ms into the future first (a
-- dispatcher that dies mid-delivery leaves it to be retried, and no other takes it meanwhile). A first try waits
-- until every earlier delivery of the run to the same URL has had its first try (wire §6.3). A recovery webhook
-- whose run is completed, cancelled or running under a live lease, and an invoke webhook whose run is no longer
-- queued, is closed as superseded instead of being returned.
CREATE FUNCTION tidebase.claim_deliveries(p_limit integer, p_hold_ms integer) RETURNS SETOF tidebase.outbox
LANGUAGE plpgsql AS $$
DECLARE
    o tidebase.outbox%ROWTYPE;
    r tidebase.runs%ROWTYPE;
BEGIN
    FOR o IN SELECT * FROM tidebase.outbox
              WHERE status = 'pending' AND next_attempt_at <= tidebase.now()
              ORDER BY next_attempt_at, id
              LIMIT p_limit
                FOR UPDATE SKIP LOCKED LOOP
        -- first tries go out in event order per (run, URL): not before every earlier one has had its first try
        IF o.attempts = 0 AND o.run_id IS NOT NULL AND EXISTS (
               SELECT 1 FROM tidebase.outbox p
                WHERE p.run_id = o.run_id AND p.id < o.id AND p.url = o.url AND p.status = 'pending'
                  AND NOT EXISTS (SELECT 1 FROM tidebase.outbox_attempts a WHERE a.outbox_id = p.id)) THEN
            CONTINUE;
        END IF;
        IF o.kind = 'recovery' THEN
            SELECT * INTO r FROM tidebase.runs WHERE id = o.run_id;
            IF (o.event_type = 'run.resume'
                AND (r.status IN ('completed', 'cancelled')
                     OR (r.status = 'running' AND r.lease_expires_at > tidebase.now())))
               OR (o.event_type = 'run.invoke' AND r.status <> 'queued') THEN
                PERFORM tidebase.close_delivery(o, NULL, 'superseded: run is ' || r.status);
                CONTINUE;
            END IF;
        END IF;
        UPDATE tidebase.outbox
           SET next_attempt_at = tidebase.now() + p_hold_ms * interval '1 millisecond', attempts = attempts + 1
         WHERE id = o.id
        RETURNING * INTO o;
        RETURN NEXT o;
    END LOOP;
END
$$;

DROP FUNCTION tidebase.record_delivery(bigint, integer, timestamptz, integer, integer, text, boolean, integer);

-- Records one try and its outcome: delivered on 2xx; otherwise retried after p_retry_ms when p_retry and tries are
-- left (the row's max_attempts, lowered to the dispatcher's p_max_attempts when given), else failed for good. A final outcome of a recovery or invoke webhook appends recovery.delivered/failed.
CREATE FUNCTION tidebase.record_delivery(
    p_id bigint, p_attempt integer, p_started_at timestamptz, p_duration_ms integer, p_status_code integer,
    p_error text, p_ok boolean, p_retry boolean, p_retry_ms integer, p_response text, p_max_attempts integer
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    o tidebase.outbox%ROWTYPE;
BEGIN
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

-- ---------------------------------------------------------------------------------------------------------------
-- Runs and children created over HTTP carry channels (runs.webhooks) and a recovery webhook (replace version 3).

DROP FUNCTION tidebase.http_create_run(text, text, jsonb, text, jsonb, integer);
DROP FUNCTION tidebase.http_create_child(text, text, text, jsonb, text, text, jsonb, text, integer, jsonb);

-- Sets the channels and recovery webhook of run p_id, created by this transaction, and shows the channels (without
-- secrets) in its run.created event, which no other transaction can have seen yet.
CREATE FUNCTION tidebase.attach_webhooks(p_id text, p_webhooks jsonb, p_recovery_webhook text)
RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(p_webhooks, '[]') <> '[]' THEN
        UPDATE tidebase.events
           SET payload = payload || jsonb_build_object('channels', (
                   SELECT coalesce(jsonb_agg(jsonb_build_object('type', 'webhook', 'url', h -> 'url',
                                                                'events', coalesce(h -> 'events', '[]'))), '[]')
                     FROM jsonb_array_elements(p_webhooks) h))
         WHERE run_id = p_id AND seq = 1;
    END IF;
    RETURN QUERY
    UPDATE tidebase.runs SET webhooks = coalesce(p_webhooks, '[]'), recovery_webhook = p_recovery_webhook
     WHERE id = p_id
    RETURNING *;
END
$$;

-- Creates the run (or returns it unchanged when it exists with the same workflow and input); `created` says which.
CREATE FUNCTION tidebase.http_create_run(
    p_id text, p_workflow text, p_input jsonb, p_input_hash text, p_metadata jsonb, p_lease_ms integer,
    p_webhooks jsonb, p_recovery_webhook text
) RETURNS TABLE (run tidebase.runs, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    v_existed boolean;
BEGIN
    PERFORM 1 FROM tidebase.runs WHERE id = p_id;
    v_existed := FOUND;
    SELECT * INTO r FROM tidebase.create_run(p_id, p_workflow, p_input, p_input_hash, true, p_metadata, NULL,
                                             p_lease_ms);
    IF NOT v_existed AND (coalesce(p_webhooks, '[]') <> '[]' OR p_recovery_webhook IS NOT NULL) THEN
        SELECT * INTO r FROM tidebase.attach_webhooks(p_id, p_webhooks, p_recovery_webhook);
    END IF;
    RETURN QUERY SELECT r, NOT v_existed;
END
$$;

-- Creates the child of (parent, edge name) once (tidebase.create_child), adding the caller's metadata under the
-- parentRunId / parentEdgeName keys (which win), its channels and recovery webhook to a new child, in the same
-- transaction. Returns the full rows.
CREATE FUNCTION tidebase.http_create_child(
    p_parent_id text, p_edge_name text, p_edge_type text, p_edge_metadata jsonb, p_child_id text, p_workflow text,
    p_input jsonb, p_input_hash text, p_lease_ms integer, p_metadata jsonb, p_webhooks jsonb,
    p_recovery_webhook text
) RETURNS TABLE (child tidebase.runs, edge tidebase.run_edges, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    r tidebase.runs%ROWTYPE;
BEGIN
    SELECT * INTO c FROM tidebase.create_child(p_parent_id, NULL, p_edge_name, p_edge_type, p_edge_metadata,
                                               p_child_id, p_workflow, p_input, p_input_hash, p_lease_ms);
    r := c.child;
    IF c.created THEN
        IF coalesce(p_metadata, '{}') <> '{}' THEN
            UPDATE tidebase.runs SET metadata = p_metadata || metadata WHERE id = r.id RETURNING * INTO r;
        END IF;
        IF coalesce(p_webhooks, '[]') <> '[]' OR p_recovery_webhook IS NOT NULL THEN
            SELECT * INTO r FROM tidebase.attach_webhooks(r.id, p_webhooks, p_recovery_webhook);
        END IF;
    END IF;
    RETURN QUERY SELECT r, c.edge, c.created;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Events carry the objects they report, as they were when the event was appended (wire §5.2): the gate of gate
-- events, the state version of state and snapshot events, the child run and edge of run.child.created, the step id
-- of a step's usage, the parent and edge name in a child's run.created. A BEFORE INSERT trigger adds them from the rows the same transaction has just written, so no
-- writer has to, and the HTTP layer only renders them. Secrets never enter an event: a gate's channels keep only
-- whether they have a secret, and a run's webhooks and recovery secret are left out.
CREATE FUNCTION tidebase.events_objects() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.type IN ('gate.created', 'gate.resolved') THEN
        NEW.payload := NEW.payload
                       || jsonb_build_object('gate', tidebase.gate_document(NEW.payload ->> 'gateId'));
    ELSIF NEW.type IN ('state.updated', 'state.saved', 'snapshot.created') THEN
        NEW.payload := NEW.payload || jsonb_build_object('stateVersion', (
            SELECT (to_jsonb(v) - 'value' - 'patch' - 'metadata') || jsonb_build_object('stream_id', s.id)
              FROM tidebase.state_versions v
              JOIN tidebase.state_streams s ON s.run_id = v.run_id AND s.name = v.stream
             WHERE v.run_id = NEW.run_id AND v.stream = NEW.payload ->> 'stream'
               AND v.version = (NEW.payload ->> 'version')::bigint));
    ELSIF NEW.type = 'run.child.created' THEN
        NEW.payload := NEW.payload || jsonb_build_object(
            'childRun', (SELECT to_jsonb(r) - 'webhooks' - 'recovery_secret' FROM tidebase.runs r
                          WHERE r.id = NEW.payload ->> 'childRunId'),
            'edgeRecord', (SELECT to_jsonb(e) FROM tidebase.run_edges e
                            WHERE e.parent_run_id = NEW.run_id AND e.name = NEW.payload ->> 'edge'));
    ELSIF NEW.type = 'run.created' THEN
        NEW.payload := NEW.payload || coalesce((
            SELECT jsonb_build_object('parentRunId', r.parent_id, 'edgeName', r.metadata ->> 'parentEdgeName')
              FROM tidebase.runs r WHERE r.id = NEW.run_id AND r.parent_id IS NOT NULL), '{}');
    ELSIF NEW.type = 'usage.recorded' AND NEW.payload #>> '{usage,step_key}' IS NOT NULL THEN
        NEW.payload := jsonb_set(NEW.payload, '{usage,step_id}', coalesce((
            SELECT to_jsonb(s.id) FROM tidebase.steps s
             WHERE s.run_id = NEW.run_id AND s.key = NEW.payload #>> '{usage,step_key}'), 'null'));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER events_objects BEFORE INSERT ON tidebase.events
    FOR EACH ROW WHEN (NEW.type IN ('gate.created', 'gate.resolved', 'state.updated', 'state.saved',
                                    'snapshot.created', 'run.child.created', 'usage.recorded', 'run.created'))
    EXECUTE FUNCTION tidebase.events_objects();

-- ---------------------------------------------------------------------------------------------------------------
-- Deadlines met by the routes (wire §7.7): begin and steps/begin apply the reconciler's deadline transition first.

-- Cancels run p_run_id with reason `deadline` (actor `reconciler`) when its deadline has passed and it is not
-- terminal; a run that completed meanwhile is left as it is. True when it cancelled the run.
CREATE FUNCTION tidebase.cancel_if_overdue(p_run_id text) RETURNS boolean
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

-- Takes the run lease for an HTTP client (acquire_run), after the deadline check. An overdue run is cancelled and
-- returned as it now is (the cancellation commits; the caller refuses it), not raised, which would roll it back.
CREATE FUNCTION tidebase.http_begin(p_id text, p_owner text, p_lease_ms integer) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
BEGIN
    IF tidebase.cancel_if_overdue(p_id) THEN
        RETURN QUERY SELECT * FROM tidebase.runs WHERE id = p_id;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM tidebase.acquire_run(p_id, p_owner, p_lease_ms);
END
$$;

-- The steps/begin decision procedure (http_begin_step), after the deadline check.
CREATE FUNCTION tidebase.http_begin_step_checked(
    p_run_id text, p_owner text, p_name text, p_input_hash text, p_input jsonb, p_options jsonb, p_contract jsonb
) RETURNS TABLE (action text, step tidebase.steps)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tidebase.cancel_if_overdue(p_run_id);
    RETURN QUERY SELECT * FROM tidebase.http_begin_step(p_run_id, p_owner, p_name, p_input_hash, p_input, p_options,
                                                        p_contract);
END
$$;
