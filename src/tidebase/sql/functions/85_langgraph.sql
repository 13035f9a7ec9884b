-- LangGraph threads (tidebase.integrations.langgraph): checkpoints and pending writes under the thread run's fence,
-- releasing the thread, deleting, pruning and copying (a fork of the run).
--
-- A thread's writer holds the lease of the thread's run (tidebase.acquire_run) and names its fencing token on every
-- write; each write passes tidebase.fence first, so a writer whose lease was taken over (a zombie process) is refused
-- before it stores anything (I3), a cancelled thread accepts nothing (I9), and every checkpoint and batch of writes
-- appends its event to the run's gap-free log in the same transaction (I4). Deleting, pruning and copying are
-- operator actions: unfenced, but they lock the thread's run row first (the lock order of every writer) and log what
-- they did.

-- Stores checkpoint p_checkpoint_id of namespace p_ns under the holder's token, with the blobs of the channels it
-- changed (parallel arrays; a blob already stored for that channel and version is kept), and appends
-- langgraph.checkpoint. Writing the same checkpoint id again replaces its checkpoint and metadata (LangGraph does so
-- when it re-saves a checkpoint). Returns the event seq.
CREATE OR REPLACE FUNCTION tidebase.langgraph_put(
    p_run_id text, p_token bigint, p_ns text, p_checkpoint_id text, p_parent_id text, p_thread_id text,
    p_checkpoint jsonb, p_metadata jsonb, p_channels text[], p_versions text[], p_types text[], p_blobs bytea[]
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
BEGIN
    PERFORM tidebase.prolong(p_run_id, p_token);  -- a saver's writes keep its lease live (it has no heartbeat)
    INSERT INTO tidebase.langgraph_blobs (run_id, checkpoint_ns, channel, version, type, blob)
    SELECT p_run_id, p_ns, b.channel, b.version, b.type, b.blob
      FROM unnest(p_channels, p_versions, p_types, p_blobs) AS b (channel, version, type, blob)
    ON CONFLICT DO NOTHING;
    INSERT INTO tidebase.langgraph_checkpoints AS c (run_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                                                     thread_id, checkpoint, metadata, seq)
    VALUES (p_run_id, p_ns, p_checkpoint_id, p_parent_id, p_thread_id, p_checkpoint, coalesce(p_metadata, '{}'),
            v_seq)
    ON CONFLICT (run_id, checkpoint_ns, checkpoint_id) DO UPDATE
       SET checkpoint = excluded.checkpoint, metadata = excluded.metadata,
           parent_checkpoint_id = excluded.parent_checkpoint_id, seq = excluded.seq;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'langgraph.checkpoint',
            jsonb_build_object('checkpointNs', p_ns, 'checkpointId', p_checkpoint_id,
                               'parentCheckpointId', p_parent_id, 'source', p_metadata -> 'source',
                               'step', p_metadata -> 'step', 'channels', to_jsonb(p_channels)));
    RETURN v_seq;
END
$$;

-- Stores the pending writes of task p_task_id for checkpoint p_checkpoint_id under the holder's token (parallel
-- arrays, one element per write) and appends langgraph.writes. A write is kept once per (task, index): a repeat is
-- ignored, unless p_replace (a batch of special writes only: an error, an interrupt or a resume value is replaced by
-- its latest value). Returns the event seq.
CREATE OR REPLACE FUNCTION tidebase.langgraph_put_writes(
    p_run_id text, p_token bigint, p_ns text, p_checkpoint_id text, p_task_id text, p_task_path text,
    p_idx integer[], p_channels text[], p_types text[], p_blobs bytea[], p_replace boolean
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
BEGIN
    PERFORM tidebase.prolong(p_run_id, p_token);
    INSERT INTO tidebase.langgraph_writes AS w (run_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type,
                                                blob, task_path)
    SELECT p_run_id, p_ns, p_checkpoint_id, p_task_id, x.idx, x.channel, x.type, x.blob, coalesce(p_task_path, '')
      FROM unnest(p_idx, p_channels, p_types, p_blobs) AS x (idx, channel, type, blob)
    ON CONFLICT (run_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
       SET channel = excluded.channel, type = excluded.type, blob = excluded.blob, task_path = excluded.task_path
     WHERE p_replace;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'langgraph.writes',
            jsonb_build_object('checkpointNs', p_ns, 'checkpointId', p_checkpoint_id, 'taskId', p_task_id,
                               'taskPath', p_task_path, 'channels', to_jsonb(p_channels)));
    RETURN v_seq;
END
$$;

-- Releases the lease held under p_token: the thread's run waits (status waiting) for its next writer, who takes the
-- lease at once. Appends langgraph.released.
CREATE OR REPLACE FUNCTION tidebase.langgraph_release(p_run_id text, p_token bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
BEGIN
    PERFORM tidebase.end_step_leases(p_run_id, (SELECT lease_owner FROM tidebase.runs WHERE id = p_run_id));
    UPDATE tidebase.runs
       SET status = 'waiting', lease_owner = NULL, lease_expires_at = NULL, updated_at = tidebase.now()
     WHERE id = p_run_id;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'langgraph.released', jsonb_build_object('fencingToken', p_token));
END
$$;

-- Deletes the writes of run p_run_id whose checkpoint is gone, and the blobs no remaining checkpoint of their
-- namespace reads. The caller holds the run row lock.
CREATE OR REPLACE FUNCTION tidebase.langgraph_drop_orphans(p_run_id text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM tidebase.langgraph_writes w
     WHERE w.run_id = p_run_id
       AND NOT EXISTS (SELECT 1 FROM tidebase.langgraph_checkpoints c
                        WHERE c.run_id = w.run_id AND c.checkpoint_ns = w.checkpoint_ns
                          AND c.checkpoint_id = w.checkpoint_id);
    DELETE FROM tidebase.langgraph_blobs b
     WHERE b.run_id = p_run_id
       AND NOT EXISTS (SELECT 1 FROM tidebase.langgraph_checkpoints c
                        WHERE c.run_id = b.run_id AND c.checkpoint_ns = b.checkpoint_ns
                          AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version);
$$;

-- Deletes every checkpoint whose metadata names one of the LangGraph runs p_langgraph_run_ids, in every thread and
-- namespace, with their writes and the blobs nothing reads any more; each thread touched logs langgraph.deleted.
-- Returns how many checkpoints were deleted.
CREATE OR REPLACE FUNCTION tidebase.langgraph_delete_for_runs(p_langgraph_run_ids text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_run text;
    v_count integer;
    v_total integer := 0;
BEGIN
    FOR v_run IN SELECT DISTINCT run_id FROM tidebase.langgraph_checkpoints
                  WHERE langgraph_run_id = ANY (p_langgraph_run_ids) ORDER BY run_id LOOP
        PERFORM tidebase.next_seq(v_run, 0);  -- the run row lock first, as every writer of the thread takes it
        DELETE FROM tidebase.langgraph_checkpoints
         WHERE run_id = v_run AND langgraph_run_id = ANY (p_langgraph_run_ids);
        GET DIAGNOSTICS v_count = ROW_COUNT;
        PERFORM tidebase.langgraph_drop_orphans(v_run);
        PERFORM tidebase.log_event(v_run, 'langgraph.deleted',
            jsonb_build_object('langgraphRunIds', to_jsonb(p_langgraph_run_ids), 'checkpoints', v_count));
        v_total := v_total + v_count;
    END LOOP;
    RETURN v_total;
END
$$;

-- Prunes the checkpoints of the thread runs p_run_ids: with p_keep_latest, every checkpoint but the newest of each
-- namespace; otherwise all of them. Their writes and the blobs nothing reads any more go too; the runs stay (with
-- their event logs), and each logs langgraph.pruned. Unknown runs are skipped. Returns how many checkpoints were
-- deleted.
CREATE OR REPLACE FUNCTION tidebase.langgraph_prune(p_run_ids text[], p_keep_latest boolean) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_run text;
    v_count integer;
    v_total integer := 0;
BEGIN
    FOR v_run IN SELECT id FROM tidebase.runs WHERE id = ANY (p_run_ids) ORDER BY id LOOP
        PERFORM tidebase.next_seq(v_run, 0);
        DELETE FROM tidebase.langgraph_checkpoints c
         WHERE c.run_id = v_run
           AND (NOT p_keep_latest
                OR c.checkpoint_id < (SELECT max(l.checkpoint_id) FROM tidebase.langgraph_checkpoints l
                                       WHERE l.run_id = c.run_id AND l.checkpoint_ns = c.checkpoint_ns));
        GET DIAGNOSTICS v_count = ROW_COUNT;
        PERFORM tidebase.langgraph_drop_orphans(v_run);
        PERFORM tidebase.log_event(v_run, 'langgraph.pruned',
            jsonb_build_object('strategy', CASE WHEN p_keep_latest THEN 'keep_latest' ELSE 'delete' END,
                               'checkpoints', v_count));
        v_total := v_total + v_count;
    END LOOP;
    RETURN v_total;
END
$$;

-- Copies thread run p_source_id into a new thread run p_target_id (thread p_target_thread_id) as a fork of it: a run
-- of the same workflow whose metadata says `forkedFrom`, linked from the source by an edge of type `fork`, holding
-- a copy of every checkpoint, blob and pending write of the source, in every namespace. The source is not modified.
-- TB001 when the source does not exist; TB009 when the target run exists already.
CREATE OR REPLACE FUNCTION tidebase.langgraph_copy_thread(
    p_source_id text, p_target_id text, p_target_thread_id text, p_input jsonb, p_input_hash text
) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    src tidebase.runs%ROWTYPE;
    r tidebase.runs%ROWTYPE;
BEGIN
    SELECT * INTO src FROM tidebase.runs WHERE id = p_source_id FOR SHARE;  -- no checkpoint is deleted meanwhile
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_source_id USING ERRCODE = 'TB001';
    END IF;
    INSERT INTO tidebase.runs (id, workflow, input, input_hash, metadata, lease_ms)
    VALUES (p_target_id, src.workflow, p_input, p_input_hash,
            jsonb_build_object('langgraph', jsonb_build_object('threadId', p_target_thread_id),
                               'forkedFrom', p_source_id),
            src.lease_ms)
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO r;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % exists already: a thread is copied into a new thread only', p_target_id
            USING ERRCODE = 'TB009';
    END IF;
    INSERT INTO tidebase.langgraph_blobs (run_id, checkpoint_ns, channel, version, type, blob)
    SELECT p_target_id, checkpoint_ns, channel, version, type, blob
      FROM tidebase.langgraph_blobs WHERE run_id = p_source_id;
    INSERT INTO tidebase.langgraph_checkpoints (run_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, thread_id,
                                                checkpoint, metadata, seq, created_at)
    SELECT p_target_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, p_target_thread_id, checkpoint, metadata,
           1, created_at
      FROM tidebase.langgraph_checkpoints WHERE run_id = p_source_id;
    INSERT INTO tidebase.langgraph_writes (run_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob,
                                           task_path, created_at)
    SELECT p_target_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob, task_path, created_at
      FROM tidebase.langgraph_writes WHERE run_id = p_source_id;
    INSERT INTO tidebase.run_edges (parent_run_id, name, id, child_run_id, edge_type, metadata)
    VALUES (p_source_id, 'fork:' || p_target_id, tidebase.new_id('edge_'), p_target_id, 'fork',
            jsonb_build_object('langgraphCopy', true));
    PERFORM tidebase.log_event(p_target_id, 'run.created',
        jsonb_build_object('workflowName', r.workflow, 'input', r.input, 'forkedFrom', p_source_id,
                           'checkpoints', (SELECT count(*) FROM tidebase.langgraph_checkpoints
                                            WHERE run_id = p_target_id)));
    RETURN QUERY SELECT * FROM tidebase.runs WHERE id = p_target_id;
END
$$;
