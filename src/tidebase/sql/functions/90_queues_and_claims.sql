-- Queues and claims: queued runs, workers' claims under per-queue caps, push dispatch, and releasing a claim.
--
-- *Queued runs* are ordinary runs with queue fields: a queue name, a priority, the time they become available, a
-- retry policy (max_attempts, failures so far, backoff) and an optional deadline and dedupe key. A worker claims them
-- with tidebase.claim_runs: every named queue's config row is locked in one canonical (sorted) order before anything
-- is taken, so two claimers that list overlapping queues in different orders cannot deadlock; the queue's caps
-- (concurrency; a sliding-window rate counted from claimed_at) are counted under that lock, and due runs are taken
-- with FOR UPDATE SKIP LOCKED, each given a new fencing token exactly as tidebase.acquire_run does. Caps therefore
-- hold across any number of competing workers. A ready run whose deadline passed is cancelled instead of handed out.
--
-- *Dedupe*: a partial unique index admits one active (queued or running) run per (queue, dedupe_key); an enqueue that
-- meets an active duplicate returns it instead of creating another.

-- Creates a queued run available from p_run_at, or returns the active run that holds (queue, dedupe key), or the run
-- with this id (created = false). TB005 when the id exists for another workflow. Appends run.enqueued. p_webhooks are
-- channel specs (tidebase.channel_entries).
CREATE OR REPLACE FUNCTION tidebase.enqueue_run(
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
        INSERT INTO tidebase.runs (id, workflow, status, input, input_hash, metadata, lease_ms, queue, priority,
                                   dedupe_key, available_at, max_attempts, retry_backoff_ms, deadline_at, webhooks,
                                   recovery_webhook, recovery_secret)
        VALUES (p_id, p_workflow, 'queued', coalesce(p_input, '{}'), p_input_hash, coalesce(p_metadata, '{}'),
                coalesce(p_lease_ms, 30000), p_queue, coalesce(p_priority, 0), p_dedupe_key,
                coalesce(p_run_at, tidebase.now()), coalesce(p_max_attempts, 1), coalesce(p_backoff_ms, 1000),
                p_deadline, tidebase.channel_entries(p_webhooks), p_recovery_webhook, p_recovery_secret)
        ON CONFLICT DO NOTHING
        RETURNING * INTO run;
        IF FOUND THEN
            PERFORM tidebase.log_event(p_id, 'run.enqueued',
                jsonb_build_object('queue', p_queue, 'runAt', run.available_at, 'workflowName', p_workflow,
                                   'input', run.input, 'dedupeKey', p_dedupe_key)
                || jsonb_strip_nulls(jsonb_build_object('schedule', p_metadata -> 'schedule',
                                                        'fireTime', p_metadata -> 'fireTime')));
            PERFORM pg_notify('tidebase_queues', p_queue);
            SELECT * INTO run FROM tidebase.runs WHERE id = p_id;
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

-- How many more runs queue config c admits now: concurrency minus running, rate minus claims in the window (NULL
-- caps are unlimited). The caller holds the config row lock.
CREATE OR REPLACE FUNCTION tidebase.queue_capacity(c tidebase.queue_config, p_now timestamptz) RETURNS integer
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
CREATE OR REPLACE FUNCTION tidebase.cancel_overdue_ready(p_queue text, p_now timestamptz) RETURNS void
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
CREATE OR REPLACE FUNCTION tidebase.ready_runs(p_queue text, p_now timestamptz, p_limit integer, p_workflows text[])
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
                   attempt = attempt + 1, updated_at = v_now, claimed_at = v_now,
                   started_at = coalesce(started_at, v_now)
             WHERE id = v_id
            RETURNING * INTO r;
            PERFORM tidebase.log_event(r.id, 'run.claimed',
                jsonb_build_object('leaseOwner', p_owner, 'queue', q, 'attempt', r.attempt,
                                   'fencingToken', r.fencing_token));
            UPDATE tidebase.recoveries
               SET outcome = 'resumed', resumed_by = p_owner, resumed_at = v_now, resumed_token = r.fencing_token
             WHERE run_id = r.id AND outcome = 'requeued';
            v_left := v_left - 1;
            RETURN QUERY SELECT * FROM tidebase.runs WHERE id = v_id;
        END LOOP;
    END LOOP;
END
$$;

-- Hands a claimed run back to its queue (a worker shutting down before the run finished), fenced by the token; the
-- step leases of the holder end with its lease.
CREATE OR REPLACE FUNCTION tidebase.release_run(p_id text, p_token bigint, p_reason text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_id, p_token, 1);
BEGIN
    PERFORM tidebase.end_step_leases(p_id, (SELECT lease_owner FROM tidebase.runs WHERE id = p_id));
    UPDATE tidebase.runs
       SET status = CASE WHEN queue IS NULL THEN 'pending' ELSE 'queued' END, available_at = tidebase.now(),
           lease_owner = NULL, lease_expires_at = NULL, updated_at = tidebase.now()
     WHERE id = p_id;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_id, v_seq, 'run.released', jsonb_build_object('reason', p_reason));
END
$$;

-- Sets (upserts) a queue's caps. NULL concurrency or rate_limit means unlimited.
CREATE OR REPLACE FUNCTION tidebase.configure_queue(
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

-- Push dispatch (docs/http-api.md#invoke-webhooks): for each queue with an invoke_url, up to min(10, capacity) ready
-- runs are offered to the application by a `run.invoke` webhook; each stays `queued` but becomes available again only
-- 60 s later (claimed_at counts it against the rate cap). Returns the outbox rows created.
CREATE OR REPLACE FUNCTION tidebase.dispatch_push(p_limit integer) RETURNS SETOF tidebase.outbox
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
            PERFORM tidebase.log_event(r.id, 'recovery.started',
                jsonb_build_object('recoveryAttemptId', o.public_id, 'reason', 'queue_dispatch'));
            RETURN NEXT o;
        END LOOP;
    END LOOP;
END
$$;
