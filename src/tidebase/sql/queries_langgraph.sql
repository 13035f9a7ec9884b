-- The statements of the LangGraph checkpointer (tidebase.integrations.langgraph), by name. Parameters are %(name)s
-- placeholders. Writes call the functions of functions/85_langgraph.sql; the thread's run is created and leased by
-- the library's own create_run and acquire_run.

-- name: langgraph_put
-- Store one checkpoint and the blobs of the channels it changed, fenced by the thread run's token.
SELECT tidebase.langgraph_put(%(run_id)s, %(token)s, %(ns)s, %(checkpoint_id)s, %(parent_id)s, %(thread_id)s,
                              %(checkpoint)s::jsonb, %(metadata)s::jsonb, %(channels)s::text[], %(versions)s::text[],
                              %(types)s::text[], %(blobs)s::bytea[]) AS seq

-- name: langgraph_put_writes
-- Store one task's pending writes for a checkpoint, fenced by the thread run's token.
SELECT tidebase.langgraph_put_writes(%(run_id)s, %(token)s, %(ns)s, %(checkpoint_id)s, %(task_id)s, %(task_path)s,
                                     %(idx)s::integer[], %(channels)s::text[], %(types)s::text[], %(blobs)s::bytea[],
                                     %(replace)s) AS seq

-- name: langgraph_release
-- Release the thread run's lease held under the token (the run then waits for its next writer).
SELECT tidebase.langgraph_release(%(run_id)s, %(token)s)

-- name: langgraph_checkpoints
-- Checkpoints newest first, each with the blobs its channel versions name and its pending writes (in LangGraph's
-- order: task path, task id, index), as parallel arrays. Every filter is optional: the thread's run, the namespace,
-- one checkpoint id, ids before a cursor, metadata containing a JSON object.
SELECT c.run_id, c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint, c.metadata,
       b.channels AS blob_channels, b.types AS blob_types, b.blobs AS blob_values,
       w.task_ids AS write_tasks, w.channels AS write_channels, w.types AS write_types, w.blobs AS write_values
  FROM (SELECT * FROM tidebase.langgraph_checkpoints
         WHERE (%(run_id)s::text IS NULL OR run_id = %(run_id)s)
           AND (%(ns)s::text IS NULL OR checkpoint_ns = %(ns)s)
           AND (%(checkpoint_id)s::text IS NULL OR checkpoint_id = %(checkpoint_id)s)
           AND (%(before)s::text IS NULL OR checkpoint_id < %(before)s)
           AND (%(filter)s::jsonb IS NULL OR metadata @> %(filter)s::jsonb)
         ORDER BY checkpoint_id DESC, run_id, checkpoint_ns
         LIMIT %(limit)s) c
  LEFT JOIN LATERAL (
      SELECT array_agg(x.channel ORDER BY x.channel) AS channels, array_agg(x.type ORDER BY x.channel) AS types,
             array_agg(x.blob ORDER BY x.channel) AS blobs
        FROM tidebase.langgraph_blobs x
        JOIN jsonb_each_text(c.checkpoint -> 'channel_versions') v (channel, version)
          ON x.channel = v.channel AND x.version = v.version
       WHERE x.run_id = c.run_id AND x.checkpoint_ns = c.checkpoint_ns AND x.type <> 'empty'
  ) b ON true
  LEFT JOIN LATERAL (
      SELECT array_agg(x.task_id ORDER BY x.task_path, x.task_id, x.idx) AS task_ids,
             array_agg(x.channel ORDER BY x.task_path, x.task_id, x.idx) AS channels,
             array_agg(x.type ORDER BY x.task_path, x.task_id, x.idx) AS types,
             array_agg(x.blob ORDER BY x.task_path, x.task_id, x.idx) AS blobs
        FROM tidebase.langgraph_writes x
       WHERE x.run_id = c.run_id AND x.checkpoint_ns = c.checkpoint_ns AND x.checkpoint_id = c.checkpoint_id
  ) w ON true
 ORDER BY c.checkpoint_id DESC, c.run_id, c.checkpoint_ns

-- name: langgraph_delete_thread
-- Delete a thread's run (a run the checkpointer created), which deletes its checkpoints, blobs, writes and events.
DELETE FROM tidebase.runs WHERE id = %(run_id)s AND metadata ? 'langgraph' RETURNING id

-- name: langgraph_delete_for_runs
-- Delete the checkpoints (and their writes) of the given LangGraph run ids, in every thread.
SELECT tidebase.langgraph_delete_for_runs(%(langgraph_run_ids)s::text[]) AS deleted

-- name: langgraph_prune
-- Prune the checkpoints of the given thread runs: keep the newest per namespace, or delete them all.
SELECT tidebase.langgraph_prune(%(run_ids)s::text[], %(keep_latest)s) AS deleted

-- name: langgraph_copy_thread
-- Copy a thread run into a new thread run, as a fork of it.
SELECT * FROM tidebase.langgraph_copy_thread(%(source_id)s, %(target_id)s, %(target_thread_id)s, %(input)s::jsonb,
                                             %(input_hash)s)
