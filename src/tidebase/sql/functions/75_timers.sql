-- Durable timers (run.sleep, run.sleep_until): a wake time computed once with the database clock and checkpointed.
--
-- A timer is a row of tidebase.steps under its step key (the name plus its occurrence, as for run.step), with an
-- input hash of its own kind, so that a step and a timer can never be taken for each other (TB005). Its first
-- execution computes the wake time with tidebase.now() and stores it in the row's `input` ({wakeAt, seconds?,
-- until?}) with status `running` and no step lease (a timer runs no user code: nothing of it can be interrupted), and
-- appends timer.started. Once the wake time has passed (by the database clock) or the holder has waited the remaining
-- time in its process, the timer fires: the row becomes `completed` with output {wakeAt, firedAt} and timer.fired is
-- appended. A completed timer is replayed from the checkpoints loaded with the lease, like any completed step: a
-- replay never waits again. A resume never moves the wake time: the arguments of later calls are not compared.
--
-- While more than the caller's inline limit remains, the run gives its lease back in the same transaction, as a gate
-- suspension does: a run that a worker may resume (on a queue, or with a resume_queue) becomes `queued` on that queue
-- with available_at = the wake time, so the normal claim path (tidebase.claim_runs, index runs_queue_due) hands it to
-- a worker when it is due and no process holds it meanwhile; any other run becomes `waiting`, resumed by invoking it
-- again. run.suspended {reason: "timer", timer, wakeAt, queue} says why.
--
-- Every write passes the fence first (tidebase.fence with 0 seqs: the run row lock and the holder's admission), then
-- appends its events with tidebase.log_event under that lock, so the log stays gap-free (I4) and a stale holder or a
-- cancelled run writes nothing (I3, I9).

-- The timer p_key of run p_run_id for the holder of p_token, in one transaction: started if it has no row yet (wake
-- time p_wake_at, else now + p_seconds), fired when its wake time has passed or p_waited (the caller waited the
-- remaining time it was told, by its own monotonic clock: a database clock pinned by a test does not move), else,
-- when more than p_inline_ms remains (NULL: no limit), the run suspended as the header says. Returns the wake time,
-- the database clock's reading, whether the timer has fired, and for a suspension the run's new status and queue.
-- TB005 (DETAIL step) when the key holds a step that is not a timer.
CREATE OR REPLACE FUNCTION tidebase.sleep_timer(
    p_run_id text, p_token bigint, p_key text, p_name text, p_occurrence integer, p_input_hash text,
    p_seconds double precision, p_wake_at timestamptz, p_inline_ms bigint, p_waited boolean
) RETURNS TABLE (wake_at timestamptz, db_now timestamptz, fired boolean, suspended text, queue text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz;
    v_wake timestamptz;
    s tidebase.steps%ROWTYPE;
    r tidebase.runs%ROWTYPE;
BEGIN
    PERFORM tidebase.fence(p_run_id, p_token, 0);
    v_now := tidebase.now();
    SELECT * INTO s FROM tidebase.steps WHERE run_id = p_run_id AND key = p_key FOR UPDATE;
    IF FOUND AND s.input_hash <> p_input_hash THEN
        RAISE EXCEPTION 'step % of run % is not a timer (it was checkpointed by another kind of call)', p_key,
            p_run_id USING ERRCODE = 'TB005', DETAIL = 'step';
    ELSIF FOUND AND s.status = 'completed' THEN
        RETURN QUERY SELECT (s.output ->> 'wakeAt')::timestamptz, v_now, true, NULL::text, NULL::text;
        RETURN;
    ELSIF FOUND THEN
        v_wake := (s.input ->> 'wakeAt')::timestamptz;
    ELSE
        v_wake := coalesce(p_wake_at, v_now + p_seconds * interval '1 second');
        INSERT INTO tidebase.steps (run_id, key, id, name, occurrence, input_hash, input, status, attempt,
                                    started_at, updated_at)
        VALUES (p_run_id, p_key, tidebase.new_id('step_'), p_name, p_occurrence, p_input_hash,
                jsonb_strip_nulls(jsonb_build_object('wakeAt', v_wake, 'seconds', p_seconds, 'until', p_wake_at)),
                'running', 1, v_now, v_now)
        RETURNING * INTO s;
        PERFORM tidebase.log_event(p_run_id, 'timer.started',
            jsonb_build_object('stepId', s.id, 'name', p_key, 'wakeAt', v_wake,
                               'seconds', round(extract(epoch FROM v_wake - v_now)::numeric, 3)));
    END IF;
    IF v_wake <= v_now OR p_waited THEN
        UPDATE tidebase.steps
           SET status = 'completed', output = jsonb_build_object('wakeAt', v_wake, 'firedAt', v_now),
               completed_at = v_now, updated_at = v_now
         WHERE run_id = p_run_id AND key = p_key;
        PERFORM tidebase.log_event(p_run_id, 'timer.fired',
            jsonb_build_object('stepId', s.id, 'name', p_key, 'wakeAt', v_wake, 'firedAt', v_now));
        RETURN QUERY SELECT v_wake, v_now, true, NULL::text, NULL::text;
        RETURN;
    END IF;
    IF p_inline_ms IS NULL OR v_wake - v_now <= p_inline_ms * interval '1 millisecond' THEN
        RETURN QUERY SELECT v_wake, v_now, false, NULL::text, NULL::text;  -- the caller waits in its process
        RETURN;
    END IF;
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id;
    PERFORM tidebase.end_step_leases(p_run_id, r.lease_owner);
    UPDATE tidebase.runs AS u
       SET status = CASE WHEN coalesce(u.queue, u.resume_queue) IS NULL THEN 'waiting' ELSE 'queued' END,
           queue = coalesce(u.queue, u.resume_queue),
           available_at = CASE WHEN coalesce(u.queue, u.resume_queue) IS NULL THEN u.available_at ELSE v_wake END,
           lease_owner = NULL, lease_expires_at = NULL, updated_at = v_now
     WHERE u.id = p_run_id
    RETURNING * INTO r;
    PERFORM tidebase.log_event(p_run_id, 'run.suspended',
        jsonb_build_object('reason', 'timer', 'timer', p_key, 'wakeAt', v_wake, 'queue', r.queue));
    RETURN QUERY SELECT v_wake, v_now, false, r.status, r.queue;
END
$$;
