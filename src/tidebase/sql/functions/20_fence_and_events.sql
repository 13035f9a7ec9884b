-- The fence (I3, I9) and the event counter (I4): the two rules every write of a run goes through.
--
-- *The counter.* tidebase.next_seq is the only statement in the schema that advances a run's event counter
-- (tidebase.event_counters.event_seq). It first locks the run row FOR NO KEY UPDATE (or reuses the lock the
-- transaction already holds) and keeps it until commit: writers of one run serialize on it, each transaction's events
-- get consecutive seqs and commit in seq order, and a rolled-back transaction gives its seqs back with everything
-- else. The log is gap-free and ordered (I4).
--
-- *The fence.* tidebase.admits is the only statement of who may write to a run: the holder of the run's current
-- fencing token while the run is running (I3), or, with no token, any writer while the run is neither cancelled nor
-- completed (I9; operators and the HTTP routes that carry no lease). tidebase.fence(run, token, n) is the entry point
-- of every write that must pass it: it locks the run row only if the writer is admitted, and reserves n seqs, in one
-- call (the per-step hot path can afford one round trip, not two). When no row is locked, tidebase.refuse explains
-- why, by raising. The lock conflicts with every update of the run row (a lease taken over, a cancellation, a lease
-- renewal), so a writer either sees the new token and is refused, or commits before the change is made. Writers that
-- checked the run themselves under its lock (lease acquisition, cancellation, recovery) or that any run accepts
-- (usage, recovery records) reserve their seqs with tidebase.next_seq directly.
--
-- *Why the counter is not on the run row.* Any update of tidebase.runs, even a heap-only one, makes Postgres open all
-- 13 of its indexes and deserialize and evaluate its 6 CHECK constraints, on every execution. Locking the row changes
-- no column, and the counter's own row has one key, no CHECK constraint and no trigger (fillfactor 50, so its updates
-- stay heap-only): complete_step's server time fell from 0.22 to 0.16 ms (docs/benchmarks.md, migration 0004).
--
-- *Why the fence does not renew the lease.* Renewing it here would update the run row on every step, the cost just
-- described. The library renews by its heartbeat (every third of the lease); the doors whose contract says that a
-- holder's writes renew its lease (the HTTP step writes, the LangGraph saver) call tidebase.prolong after their write.

-- Whether a write under p_token may go ahead on a run with status p_status and current token p_current. Inlined
-- into the statements that use it.
CREATE OR REPLACE FUNCTION tidebase.admits(p_status text, p_current bigint, p_token bigint) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_token IS NULL THEN p_status NOT IN ('cancelled', 'completed')
                ELSE p_status = 'running' AND p_current = p_token END
$$;

-- Raises the reason a fenced write was refused: TB001 unknown run; TB003 when p_token is not the run's current token
-- (whatever the run's status, so a zombie always learns first that it lost the lease); TB004 cancelled; TB007
-- completed; TB003 otherwise (the run is not running under that token). Called only on the unhappy path.
CREATE OR REPLACE FUNCTION tidebase.refuse(p_run_id text, p_token bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    ELSIF p_token IS NOT NULL AND p_token <> r.fencing_token THEN
        RAISE EXCEPTION 'lease on run % lost: token % is not the current token (%)', p_run_id, p_token,
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

-- Reserves p_events seqs of run p_run_id for the calling transaction and returns the first (with p_events = 0, it
-- only takes the row lock, and returns null), hands the events to the run's webhook channels if it has any
-- (tidebase.hand_to_channels, 95_webhooks.sql), and rings the doorbell. With p_fenced, the write must pass
-- tidebase.admits for p_token (the fence: call it as tidebase.fence); otherwise any existing run is admitted. Updates
-- no column of the run row (see above). A run's first event creates its counter row, under the run row lock, so no
-- two writers can race to create it.
CREATE OR REPLACE FUNCTION tidebase.next_seq(
    p_run_id text, p_events integer DEFAULT 1, p_fenced boolean DEFAULT false, p_token bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
    v_hooked boolean;
BEGIN
    SELECT webhooks <> '[]'::jsonb INTO v_hooked FROM tidebase.runs
     WHERE id = p_run_id AND (NOT p_fenced OR tidebase.admits(status, fencing_token, p_token))
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM tidebase.refuse(p_run_id, p_token);
    END IF;
    IF p_events = 0 THEN
        RETURN NULL;
    END IF;
    UPDATE tidebase.event_counters SET event_seq = event_seq + p_events WHERE run_id = p_run_id
    RETURNING event_seq INTO v_seq;
    IF NOT FOUND THEN
        INSERT INTO tidebase.event_counters (run_id, event_seq) VALUES (p_run_id, p_events)
        RETURNING event_seq INTO v_seq;
    END IF;
    IF v_hooked THEN
        PERFORM tidebase.hand_to_channels(p_run_id, v_seq - p_events, v_seq);
    END IF;
    PERFORM tidebase.ring(p_run_id);
    RETURN v_seq - p_events + 1;
END
$$;

-- The fence: admits a write to run p_run_id under p_token (NULL: an unfenced writer, refused only by a terminal run),
-- reserves p_events seqs and returns the first (null for 0: the lock only); raises (tidebase.refuse) otherwise. Every
-- fenced write calls it, first, before it locks anything else of the run.
CREATE OR REPLACE FUNCTION tidebase.fence(p_run_id text, p_token bigint, p_events integer DEFAULT 1) RETURNS bigint
LANGUAGE sql AS $$
    SELECT tidebase.next_seq(p_run_id, p_events, true, p_token)
$$;

-- Renews the live lease of the holder of p_token to now + the run's lease (an expired lease is never revived, and
-- another writer's token changes nothing), for the doors whose writes renew the lease. Call it after tidebase.fence,
-- which holds the run row lock.
-- PL/pgSQL for the reason tidebase.ring is: it runs on every HTTP step write, and keeps its plan per session.
CREATE OR REPLACE FUNCTION tidebase.prolong(p_run_id text, p_token bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tidebase.runs SET lease_expires_at = tidebase.now() + lease_ms * interval '1 millisecond'
     WHERE id = p_run_id AND p_token IS NOT NULL AND fencing_token = p_token AND status = 'running'
       AND lease_expires_at > tidebase.now();
END
$$;

-- Appends one event to a run whose write the caller has admitted itself, or that any run accepts (usage and recovery
-- records). Returns its seq.
CREATE OR REPLACE FUNCTION tidebase.log_event(p_run_id text, p_type text, p_payload jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.next_seq(p_run_id, 1);
BEGIN
    INSERT INTO tidebase.events (run_id, seq, type, payload) VALUES (p_run_id, v_seq, p_type, p_payload);
    RETURN v_seq;
END
$$;

-- Appends one event of the caller's own type to the run's log, through the fence. Returns its seq.
CREATE OR REPLACE FUNCTION tidebase.append_event(p_run_id text, p_token bigint, p_type text, p_payload jsonb)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
BEGIN
    INSERT INTO tidebase.events (run_id, seq, type, payload) VALUES (p_run_id, v_seq, p_type, p_payload);
    RETURN v_seq;
END
$$;
