-- Retention: deleting whole finished run trees, one bounded batch per transaction.
--
-- A *tree* is a root run (parent_id IS NULL) with all its descendants (child and fan-out runs, through parent_id).
-- Retention deletes trees whole, never a child before its root: a tree goes when its root's status is one of the
-- chosen finished statuses, every descendant is finished (completed, failed or cancelled), and every run of it
-- finished before the cutoff. A run's finish time is completed_at (set when it completes or is cancelled), else
-- updated_at (a failed run: the time of its failure; a finished run's row is not written again unless an operator
-- recovers it, which makes it live).
--
-- A tree is kept, and looked at again by a later pass, while something still needs it:
--   * one of its runs has a pending gate (a decision could still arrive), or a pending webhook delivery;
--   * one of its runs is the run of the newest fire of a schedule (`tide.schedules.fires(...)` shows it);
--   * a run outside it holds a child edge into it (a fork inherits the edges of its source's finished children and
--     replays their results through them: the fork goes first);
--   * one of its runs has a fork that still exists (the fork's replayed steps name it in steps.usage_from, so its
--     usage report reads the source's usage rows: the fork, which is newer, goes first).
--
-- Concurrency. Every lock a batch takes is taken with SKIP LOCKED on run rows, roots first, then descendants, so
-- a batch never waits for a row lock held by anyone, and a tree of which any run is locked by someone else is left
-- for a later pass. The statuses, ages and blockers are checked after the rows are locked, so a run that becomes
-- live (a recovery, a re-invocation) between the scan and the lock is never deleted. A writer that needs a run a
-- batch holds (it can only be a finished run: nothing else is locked) waits for that one batch at most, then finds
-- the run gone. Writers of other runs never wait: the batch locks nothing of theirs (deleting a child row takes no
-- lock on the run a foreign key points to). Two processes running retention at once skip each other's rows, so
-- each tree is deleted once. Each batch commits on its own: an interrupted pass leaves only whole trees deleted.
--
-- Deletes are explicit, table by table (set-based, and each table's count comes for free); the ON DELETE CASCADE
-- foreign keys of a table added later still remove its rows when the run row goes. tidebase.outbox has no foreign
-- key (a delivery may outlive a run by design), so its rows and their attempts are deleted here explicitly.
-- schedule_fires rows are the schedule's history, not the run's: they stay, naming a run id that may be gone.

-- One batch of retention. Examines the next p_limit finished roots created before p_cutoff after the keyset cursor
-- (p_after_at, p_after_id) (the start: '-infinity', ''), and deletes the trees that may go, or with p_dry_run
-- counts what would go without deleting (taking the same row locks, released at the end of the batch).
-- p_statuses are the root statuses accepted (a subset of completed, failed, cancelled). Returns how many roots the
-- window held (fewer than p_limit: the pass is complete), the trees and runs deleted, the roots kept, the cursor to
-- pass to the next batch, and the rows deleted per table.
CREATE OR REPLACE FUNCTION tidebase.gc_batch(
    p_cutoff timestamptz, p_statuses text[], p_after_at timestamptz, p_after_id text, p_limit integer,
    p_dry_run boolean
) RETURNS TABLE (examined integer, trees integer, runs integer, kept integer, last_created_at timestamptz,
                 last_id text, tables jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_window text[];
    v_roots text[];         -- roots locked by this batch, still finished, old and of an accepted status
    v_tree_roots text[];    -- (v_tree_roots[i], v_tree_ids[i]): run i and the root of its tree, roots included
    v_tree_ids text[];
    v_locked text[];        -- descendants locked by this batch, finished before the cutoff
    v_scheduled text[];     -- the run of each schedule's newest fire
    v_go text[];            -- roots whose trees go
    v_ids text[];           -- every run of those trees
    v_n bigint;
    -- every table a tree occupies, counted from zero, so the result names them all even when nothing went
    v_tables jsonb := jsonb_build_object('runs', 0, 'steps', 0, 'events', 0, 'event_counters', 0, 'webhook_cursors', 0,
                                         'state_streams', 0, 'state_versions', 0, 'gates', 0, 'run_edges', 0,
                                         'usage', 0, 'recoveries', 0, 'outbox', 0, 'outbox_attempts', 0,
                                         'langgraph_checkpoints', 0, 'langgraph_blobs', 0, 'langgraph_writes', 0);
BEGIN
    -- The window, from the partial index runs_retention alone (an index range scan).
    SELECT coalesce(array_agg(w.id ORDER BY w.created_at, w.id), '{}'), count(*)::integer,
           (array_agg(w.created_at ORDER BY w.created_at DESC, w.id DESC))[1],
           (array_agg(w.id ORDER BY w.created_at DESC, w.id DESC))[1]
      INTO v_window, examined, last_created_at, last_id
      FROM (SELECT r.id, r.created_at
              FROM tidebase.runs r
             WHERE r.parent_id IS NULL AND r.status IN ('completed', 'failed', 'cancelled')
               AND r.created_at < p_cutoff AND (r.created_at, r.id) > (p_after_at, p_after_id)
             ORDER BY r.created_at, r.id
             LIMIT p_limit) w;
    trees := 0;
    runs := 0;
    kept := examined;
    tables := v_tables;
    IF examined = 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;

    -- Lock the roots that may go; the conditions are evaluated again on the locked row version.
    SELECT coalesce(array_agg(l.id), '{}') INTO v_roots
      FROM (SELECT r.id FROM tidebase.runs r
             WHERE r.id = ANY (v_window) AND r.parent_id IS NULL
               AND r.status IN ('completed', 'failed', 'cancelled') AND r.status = ANY (p_statuses)
               AND coalesce(r.completed_at, r.updated_at) < p_cutoff
             ORDER BY r.id
               FOR UPDATE SKIP LOCKED) l;

    -- Their trees (no new descendant can appear: a child is created under its parent's lock, by a running parent).
    WITH RECURSIVE tree (root, id) AS (
        SELECT x, x FROM unnest(v_roots) AS x
        UNION ALL
        SELECT t.root, c.id FROM tree t JOIN tidebase.runs c ON c.parent_id = t.id
    )
    SELECT coalesce(array_agg(t.root), '{}'), coalesce(array_agg(t.id), '{}')
      INTO v_tree_roots, v_tree_ids
      FROM tree t;

    SELECT coalesce(array_agg(l.id), '{}') INTO v_locked
      FROM (SELECT r.id FROM tidebase.runs r
             WHERE r.id = ANY (v_tree_ids) AND r.parent_id IS NOT NULL
               AND r.status IN ('completed', 'failed', 'cancelled')
               AND coalesce(r.completed_at, r.updated_at) < p_cutoff
             ORDER BY r.id
               FOR UPDATE SKIP LOCKED) l;

    SELECT coalesce(array_agg(f.run_id), '{}') INTO v_scheduled
      FROM tidebase.schedules s
      JOIN LATERAL (SELECT sf.run_id FROM tidebase.schedule_fires sf
                     WHERE sf.schedule = s.name AND sf.status = 'enqueued' AND sf.run_id IS NOT NULL
                     ORDER BY sf.fire_at DESC LIMIT 1) f ON true;

    WITH t AS (SELECT * FROM unnest(v_tree_roots, v_tree_ids) AS t (root, id))
    SELECT coalesce(array_agg(x), '{}') INTO v_go
      FROM unnest(v_roots) AS x
     WHERE NOT EXISTS (  -- a descendant that is live, young, or locked by someone else
               SELECT 1 FROM t WHERE t.root = x AND t.id <> x AND NOT t.id = ANY (v_locked))
       AND NOT EXISTS (
               SELECT 1 FROM t
                WHERE t.root = x
                  AND (t.id = ANY (v_scheduled)
                       OR EXISTS (SELECT 1 FROM tidebase.gates g WHERE g.run_id = t.id AND g.status = 'pending')
                       OR EXISTS (SELECT 1 FROM tidebase.outbox o WHERE o.run_id = t.id AND o.status = 'pending')
                       OR EXISTS (SELECT 1 FROM tidebase.run_edges e
                                   WHERE e.child_run_id = t.id AND e.edge_type <> 'fork'
                                     AND NOT EXISTS (SELECT 1 FROM t o WHERE o.root = x AND o.id = e.parent_run_id))
                       OR EXISTS (SELECT 1 FROM tidebase.run_edges e
                                   WHERE e.parent_run_id = t.id AND e.edge_type = 'fork'
                                     AND NOT EXISTS (SELECT 1 FROM t o WHERE o.root = x AND o.id = e.child_run_id))));

    SELECT coalesce(array_agg(t.id), '{}') INTO v_ids
      FROM unnest(v_tree_roots, v_tree_ids) AS t (root, id)
     WHERE t.root = ANY (v_go);
    trees := cardinality(v_go);
    runs := cardinality(v_ids);
    kept := examined - trees;
    IF runs = 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;

    IF p_dry_run THEN
        SELECT jsonb_build_object(
            'runs', runs,
            'steps', (SELECT count(*) FROM tidebase.steps WHERE run_id = ANY (v_ids)),
            'events', (SELECT count(*) FROM tidebase.events WHERE run_id = ANY (v_ids)),
            'event_counters', (SELECT count(*) FROM tidebase.event_counters WHERE run_id = ANY (v_ids)),
            'webhook_cursors', (SELECT count(*) FROM tidebase.webhook_cursors WHERE run_id = ANY (v_ids)),
            'state_streams', (SELECT count(*) FROM tidebase.state_streams WHERE run_id = ANY (v_ids)),
            'state_versions', (SELECT count(*) FROM tidebase.state_versions WHERE run_id = ANY (v_ids)),
            'gates', (SELECT count(*) FROM tidebase.gates WHERE run_id = ANY (v_ids)),
            'run_edges', (SELECT count(*) FROM tidebase.run_edges
                           WHERE parent_run_id = ANY (v_ids) OR child_run_id = ANY (v_ids)),
            'usage', (SELECT count(*) FROM tidebase.usage WHERE run_id = ANY (v_ids)),
            'recoveries', (SELECT count(*) FROM tidebase.recoveries WHERE run_id = ANY (v_ids)),
            'outbox', (SELECT count(*) FROM tidebase.outbox WHERE run_id = ANY (v_ids)),
            'outbox_attempts', (SELECT count(*) FROM tidebase.outbox_attempts a JOIN tidebase.outbox o
                                    ON o.id = a.outbox_id WHERE o.run_id = ANY (v_ids)),
            'langgraph_checkpoints', (SELECT count(*) FROM tidebase.langgraph_checkpoints WHERE run_id = ANY (v_ids)),
            'langgraph_blobs', (SELECT count(*) FROM tidebase.langgraph_blobs WHERE run_id = ANY (v_ids)),
            'langgraph_writes', (SELECT count(*) FROM tidebase.langgraph_writes WHERE run_id = ANY (v_ids)))
          INTO tables;
        RETURN NEXT;
        RETURN;
    END IF;

    -- Children of the run rows first (the cascades of the run delete then find nothing), the runs last.
    DELETE FROM tidebase.outbox_attempts a USING tidebase.outbox o WHERE o.run_id = ANY (v_ids) AND a.outbox_id = o.id;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('outbox_attempts', v_n);
    DELETE FROM tidebase.outbox WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('outbox', v_n);
    DELETE FROM tidebase.langgraph_writes WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('langgraph_writes', v_n);
    DELETE FROM tidebase.langgraph_blobs WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('langgraph_blobs', v_n);
    DELETE FROM tidebase.langgraph_checkpoints WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('langgraph_checkpoints', v_n);
    DELETE FROM tidebase.state_versions WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('state_versions', v_n);
    DELETE FROM tidebase.state_streams WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('state_streams', v_n);
    DELETE FROM tidebase.steps WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('steps', v_n);
    DELETE FROM tidebase.events WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('events', v_n);
    DELETE FROM tidebase.event_counters WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('event_counters', v_n);
    DELETE FROM tidebase.webhook_cursors WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('webhook_cursors', v_n);
    DELETE FROM tidebase.gates WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('gates', v_n);
    DELETE FROM tidebase.usage WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('usage', v_n);
    DELETE FROM tidebase.recoveries WHERE run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('recoveries', v_n);
    DELETE FROM tidebase.run_edges WHERE parent_run_id = ANY (v_ids) OR child_run_id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_tables := v_tables || jsonb_build_object('run_edges', v_n);
    DELETE FROM tidebase.runs WHERE id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    tables := v_tables || jsonb_build_object('runs', v_n);
    RETURN NEXT;
END
$$;
