-- The doorbell: NOTIFY on channel `tidebase_events` (payload: the run id) when a transaction appended events.
--
-- Writers ring only while some session listens: a NOTIFY makes its transaction take a cluster-wide lock until its
-- commit is flushed, which would serialize every concurrent writer's commit for nobody's benefit. A listener registers
-- its backend in tidebase.listeners before it LISTENs (and must re-read the events table after that, as the table is
-- the source of truth); rows of sessions that ended are pruned at every registration. Postgres delivers a
-- notification only when the transaction that sent it commits, so a reader is never woken for an uncommitted event.

-- PL/pgSQL, not SQL: a SQL function this shape cannot be inlined, so each call would plan its query again, which
-- measured 0.05 ms of server time per step (a third of the step's statement); PL/pgSQL keeps the plan per session.
CREATE OR REPLACE FUNCTION tidebase.ring(p_run_id text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tidebase.listeners) THEN
        PERFORM pg_notify('tidebase_events', p_run_id);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tidebase.register_listener(p_channel text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM tidebase.listeners WHERE pid NOT IN (SELECT pid FROM pg_stat_activity);
    INSERT INTO tidebase.listeners (pid, channel) VALUES (pg_backend_pid(), p_channel)
    ON CONFLICT (pid) DO UPDATE SET channel = excluded.channel, since = now();
$$;

CREATE OR REPLACE FUNCTION tidebase.unregister_listener() RETURNS void
LANGUAGE sql AS $$
    DELETE FROM tidebase.listeners WHERE pid = pg_backend_pid();
$$;
