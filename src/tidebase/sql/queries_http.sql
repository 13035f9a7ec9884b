-- The statements of the HTTP protocol (`tidebase serve`, src/tidebase/server/http_engine.py). Parameters are
-- %(name)s. They call the functions the library calls, with the token of the caller's lease owner
-- (tidebase.token_of), or the door functions of functions/99_http_door.sql; the rest read.

-- name: http_create_run
-- Create the run with its channels, or return it when it exists with the same workflow and input; TB005 otherwise.
SELECT (c.run).*, c.created
  FROM tidebase.create_run(%(run_id)s, %(workflow)s, %(input)s::jsonb, %(input_hash)s, true, %(metadata)s::jsonb,
                           NULL, %(lease_ms)s, %(webhooks)s::jsonb, %(recovery_webhook)s) AS c

-- name: http_heartbeat
-- Extend the live lease of the holder and its running step leases.
SELECT * FROM tidebase.renew_lease(%(run_id)s, tidebase.token_of(%(run_id)s, %(owner)s))

-- name: http_complete_run
-- Complete the run under the owner's token (any caller of a running run when no owner is given). `completed_now` is
-- false for a safe retry (the run was completed already; the statement's snapshot is taken before the call).
WITH before AS (SELECT status FROM tidebase.runs WHERE id = %(run_id)s)
SELECT c.*, (SELECT status FROM before) IS DISTINCT FROM 'completed' AS completed_now
  FROM tidebase.complete_run(%(run_id)s, tidebase.token_of(%(run_id)s, %(owner)s, true), %(result)s::jsonb) c

-- name: http_fail_run
-- Fail the run under the owner's token (any caller of a running run when no owner is given).
SELECT * FROM tidebase.fail_run(%(run_id)s, tidebase.token_of(%(run_id)s, %(owner)s, true), %(error)s::jsonb,
                                %(failure_class)s, %(max_auto_recoveries)s)

-- name: http_begin
-- Take the run lease for an HTTP client: an overdue run is cancelled first (TB004 then).
SELECT * FROM tidebase.http_begin(%(run_id)s, %(owner)s, %(lease_ms)s)

-- name: http_begin_step
-- The steps/begin decision procedure (tidebase.begin_step), after the deadline check; returns the action and the step.
SELECT b.action, (b.step).*
  FROM tidebase.http_begin_step(%(run_id)s, %(owner)s, %(name)s, %(input_hash)s, %(input)s::jsonb,
                                %(options)s::jsonb, %(contract)s::jsonb) AS b

-- name: http_complete_step
-- Complete a step by id under the caller's leases.
SELECT * FROM tidebase.http_complete_step(%(run_id)s, %(step_id)s, %(owner)s, %(output)s::jsonb)

-- name: http_fail_step
-- Fail a step by id under the caller's leases, classified in SQL.
SELECT * FROM tidebase.http_fail_step(%(run_id)s, %(step_id)s, %(owner)s, %(error)s::jsonb, %(retryable)s,
                                      %(decision)s)

-- name: http_append_event
-- Append a custom event under the owner's token (the door's run.emit).
SELECT tidebase.append_event(%(run_id)s, tidebase.token_of(%(run_id)s, %(owner)s), %(type)s, %(payload)s::jsonb) AS seq

-- name: http_review_step
-- Operator review of a parked step by id.
SELECT * FROM tidebase.http_review_step(%(run_id)s, %(step_id)s, %(action)s, %(output)s::jsonb, %(actor)s,
                                        %(reason)s)

-- name: http_gate_for_resolve
-- The gate of the run for a resolve, after the not-found and terminal checks.
SELECT * FROM tidebase.http_gate_for_resolve(%(run_id)s, %(gate_id)s)

-- name: http_run_exists
-- Whether the run exists (for reads that must answer 404 on an unknown run).
SELECT id, status FROM tidebase.runs WHERE id = %(run_id)s

-- name: http_step_key
-- The key of a step of the run, by id (usage records name steps by key).
SELECT key FROM tidebase.steps WHERE run_id = %(run_id)s AND id = %(step_id)s

-- name: http_gates_of_run
-- Every gate of a run, oldest first.
SELECT * FROM tidebase.gates WHERE run_id = %(run_id)s ORDER BY created_at, id

-- name: http_gate
-- One gate of a run with the run's status.
SELECT g.*, r.status AS run_status FROM tidebase.gates g JOIN tidebase.runs r ON r.id = g.run_id
 WHERE g.run_id = %(run_id)s AND g.id = %(gate_id)s

-- name: http_state_streams
-- Every state stream of a run, oldest first.
SELECT * FROM tidebase.state_streams WHERE run_id = %(run_id)s ORDER BY created_at, name

-- name: http_state_versions
-- Versions of a run's streams (one stream when given; labelled only when asked), by stream then version.
SELECT v.*, s.id AS stream_id
  FROM tidebase.state_versions v JOIN tidebase.state_streams s ON s.run_id = v.run_id AND s.name = v.stream
 WHERE v.run_id = %(run_id)s AND (%(stream)s::text IS NULL OR v.stream = %(stream)s)
   AND (NOT %(labeled)s OR v.label IS NOT NULL)
 ORDER BY v.stream, v.version

-- name: http_snapshots
-- Every labelled version of any stream of the run, newest first.
SELECT v.*, s.id AS stream_id
  FROM tidebase.state_versions v JOIN tidebase.state_streams s ON s.run_id = v.run_id AND s.name = v.stream
 WHERE v.run_id = %(run_id)s AND v.label IS NOT NULL
 ORDER BY v.created_at DESC, v.version DESC

-- name: http_stream_id
-- The id of one state stream.
SELECT id FROM tidebase.state_streams WHERE run_id = %(run_id)s AND name = %(stream)s

-- name: http_usage_of_run
-- Usage records of one run, oldest first.
SELECT u.*, s.id AS step_id FROM tidebase.usage u
  LEFT JOIN tidebase.steps s ON s.run_id = u.run_id AND s.key = u.step_key
 WHERE u.run_id = %(run_id)s ORDER BY u.created_at, u.id

-- name: http_child_runs
-- The child runs of a parent (through its edges), oldest edge first.
SELECT r.* FROM tidebase.run_edges e JOIN tidebase.runs r ON r.id = e.child_run_id
 WHERE e.parent_run_id = %(run_id)s ORDER BY e.created_at, e.name

-- name: http_all_events
-- Every event of a run, in seq order.
SELECT id, run_id, seq, type, payload, created_at FROM tidebase.events WHERE run_id = %(run_id)s ORDER BY seq

-- name: http_list_runs
-- Newest runs first, filtered by exact status and workflow when given.
SELECT * FROM tidebase.runs
 WHERE (%(status)s::text IS NULL OR status = %(status)s) AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
   AND (%(queue)s::text IS NULL OR to_jsonb(runs) ->> 'queue' = %(queue)s)
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s

-- name: http_health
-- The schema version, to tell that the database answers and is migrated.
SELECT max(version) AS version FROM tidebase.schema_migrations

-- name: http_step
-- One step of a run, by id.
SELECT * FROM tidebase.steps WHERE run_id = %(run_id)s AND id = %(step_id)s

-- name: http_step_by_name
-- One step of a run, by the name an HTTP client gave it (its key).
SELECT * FROM tidebase.steps WHERE run_id = %(run_id)s AND key = %(name)s

-- name: http_create_child
-- Create the child of (parent, edge name) once with the caller's metadata and channels, or return it (unfenced: a
-- terminal parent refuses); TB013 on a conflict.
SELECT (c.child).*, row_to_json(c.edge)::jsonb AS edge, c.created
  FROM tidebase.create_child(%(parent_id)s, NULL, %(edge_name)s, %(edge_type)s, %(edge_metadata)s::jsonb,
                             %(child_id)s, %(workflow)s, %(input)s::jsonb, %(input_hash)s, %(lease_ms)s,
                             %(metadata)s::jsonb, %(webhooks)s::jsonb, %(recovery_webhook)s) AS c
