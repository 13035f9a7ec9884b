-- The fence (I3, I9) and the event counter (I4): the two rules every write of a run goes through.
--
-- *The counter.* tidebase.next_seq is the only statement in the schema that advances runs.event_seq. It updates the
-- run row, so it takes the row lock (or reuses the one the transaction already holds) and keeps it until commit:
-- writers of one run serialize on it, each transaction's events get consecutive seqs and commit in seq order, and a
-- rolled-back transaction gives its seqs back with everything else. The log is gap-free and ordered (I4).
--
-- *The fence.* tidebase.admits is the only statement of who may write to a run: the holder of the run's current
-- fencing token while the run is running (I3), or, with no token, any writer while the run is neither cancelled nor
-- completed (I9; operators and the HTTP routes that carry no lease). tidebase.fence(run, token, n) is the entry point
-- of every write that must pass it: one conditional update of the run row that checks the writer and reserves n seqs,
-- in that single statement (the per-step hot path can afford one statement, not two). When it matches no row,
-- tidebase.refuse explains why, by raising. Writers that checked the run themselves under its lock (lease
-- acquisition, cancellation, recovery) or that any run accepts (usage, recovery records) reserve their seqs with
-- tidebase.next_seq directly.
--
-- *Why the fence does not renew the lease.* The update changes only columns no index covers (event_seq, updated_at),
-- so Postgres can make it a heap-only (HOT) update: no new entry in any of the run row's indexes, and a fraction of
-- the WAL (runs has fillfactor 70 to leave the page room for it). Renewing the lease here would change the indexed
-- lease_expires_at on every step and cost an entry in every index of runs. The library renews by its heartbeat
-- (every third of the lease); the doors whose contract says that a holder's writes renew its lease (the HTTP step
-- writes, the LangGraph saver) call tidebase.prolong after their write.

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

-- Reserves p_events seqs of run p_run_id for the calling transaction and returns the first (with p_events = 0, only
-- takes the row lock), and rings the doorbell. With p_fenced, the write must pass tidebase.admits for p_token (the
-- fence: call it as tidebase.fence); otherwise any existing run is admitted. Changes no indexed column (see above).
CREATE OR REPLACE FUNCTION tidebase.next_seq(
    p_run_id text, p_events integer DEFAULT 1, p_fenced boolean DEFAULT false, p_token bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    UPDATE tidebase.runs
       SET event_seq = event_seq + p_events, updated_at = tidebase.now()
     WHERE id = p_run_id AND (NOT p_fenced OR tidebase.admits(status, fencing_token, p_token))
    RETURNING event_seq INTO v_seq;
    IF NOT FOUND THEN
        PERFORM tidebase.refuse(p_run_id, p_token);
    END IF;
    IF p_events > 0 THEN
        PERFORM tidebase.ring(p_run_id);
    END IF;
    RETURN v_seq - p_events + 1;
END
$$;

-- The fence: admits a write to run p_run_id under p_token (NULL: an unfenced writer, refused only by a terminal run),
-- reserves p_events seqs and returns the first; raises (tidebase.refuse) otherwise. Every fenced write calls it,
-- first, before it locks anything else of the run.
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
