-- Tidebase schema, version 4: each run's event counter moves off the run row into a narrow table of its own.
--
-- Every event of a run takes the next seq of its counter (tidebase.next_seq, sql/functions/20_fence_and_events.sql).
-- Until version 3 the counter was runs.event_seq, so every step updated the run row: a row of 36 columns, 13
-- indexes and 6 CHECK constraints. Even as a heap-only update, Postgres opens every index of the table and
-- deserializes and evaluates every CHECK constraint on each execution of such a statement. Now the fence only locks
-- the run row (SELECT ... FOR NO KEY UPDATE, which conflicts with every other writer of the run exactly as the update
-- did) and advances the run's row here: one key, no CHECK constraint, no trigger (docs/benchmarks.md, "What a step
-- pays for the run row"). A run gets its counter row with its first event (every run has one: run.created).
--
-- The webhook triggers that fired on every advance of runs.event_seq move to tidebase.webhook_cursors, which only
-- runs with channels write (tidebase.hand_to_channels): a run's cursor is the last seq handed to its channels, whose
-- deliveries are queued when the transaction that moved it commits. A run with channels gets its cursor with its
-- next event, from the counter it had, so nothing is backfilled there.
--
-- runs.updated_at is no longer moved by events: it is when the run's own record last changed (status, lease holder,
-- attempt); the event log dates everything else.

CREATE TABLE tidebase.event_counters (
    run_id    text PRIMARY KEY REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    event_seq bigint NOT NULL  -- the seq of the run's newest event (rolled back with the transaction that took it)
) WITH (fillfactor = 50);

CREATE TABLE tidebase.webhook_cursors (
    run_id    text PRIMARY KEY REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    from_seq  bigint NOT NULL,  -- where the cursor started (events after it were handed to the channels)
    event_seq bigint NOT NULL   -- the seq of the newest event handed to the run's channels
) WITH (fillfactor = 50);

INSERT INTO tidebase.event_counters (run_id, event_seq)
SELECT id, event_seq FROM tidebase.runs WHERE event_seq > 0;

-- The webhook triggers of version 3 read runs.event_seq (the function files create their successors).
DROP TRIGGER IF EXISTS runs_webhooks_insert ON tidebase.runs;
DROP TRIGGER IF EXISTS runs_webhooks_update ON tidebase.runs;
DROP FUNCTION IF EXISTS tidebase.runs_webhooks();

ALTER TABLE tidebase.runs DROP COLUMN event_seq;
