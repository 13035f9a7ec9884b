-- Schedules: a schedule fires at most once per fire time.
--
-- A fire is a conditional update of the schedule's next_fire_at (only the reconciler that still sees the expected
-- fire time moves it on) plus a row in schedule_fires keyed by (schedule, fire_at). Fire times skipped while no
-- reconciler ran are recorded as `missed`, not silently collapsed. The run of a fire is an ordinary queued run,
-- deduplicated by `sched:<name>:<fire time>`.

-- Fires schedule p_name for fire time p_fire_at, once: only when its next_fire_at still equals p_fire_at (or the
-- first of p_missed). Records the fire times p_missed as `missed`, enqueues one run for p_fire_at, and moves
-- next_fire_at to p_next. Returns the run id, or NULL when this fire was already taken.
CREATE OR REPLACE FUNCTION tidebase.fire_schedule(
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
