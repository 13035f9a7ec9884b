-- Every statement the library runs, by name. Parameters are %(name)s placeholders.
-- State transitions live in the functions of functions/*.sql; these statements call them or read.

-- name: create_run
-- Create the run if missing (appending run.created), else return it; TB005 on another workflow or input.
SELECT (c.run).*, c.created
  FROM tidebase.create_run(%(run_id)s, %(workflow)s, %(input)s::jsonb, %(input_hash)s, %(check_input)s,
                           %(metadata)s::jsonb, %(parent_id)s, %(lease_ms)s) AS c

-- name: acquire_run
-- Take the run lease for an owner: new fencing token, attempt + 1; TB002 while another owner's lease is live,
-- unless that owner is `dead_owner` (a process of this host that is gone), whose lease is taken over.
SELECT * FROM tidebase.acquire_run(%(run_id)s, %(owner)s, %(lease_ms)s, %(dead_owner)s, %(resume_queue)s)

-- name: load_checkpoints
-- Every step row of a run, for replay: loaded once when a run starts, then served from memory. Only what a replay
-- reads: the contract only of a step that is not completed (only an interrupted step's contract decides anything).
-- `has_usage` tells which replayed steps must report the usage they saved. The output comes as its JSON text, decoded
-- only when its step is replayed (tidebase.core.rules.plan_step): a checkpoint the workflow does not reach again is
-- never decoded, and decoding the text costs less than the driver's jsonb loader (tidebase.core.serde.decode). The
-- columns are those of tidebase.core.rules.Checkpoint, in its order; the rows come as tuples.
SELECT key, status, input_hash, output::text AS output,
       CASE WHEN status <> 'completed' THEN contract END AS contract, attempt,
       EXISTS (SELECT 1 FROM tidebase.usage u
                WHERE u.run_id = coalesce(s.usage_from, s.run_id) AND u.step_key = s.key AND NOT u.saved)
           AS has_usage
  FROM tidebase.steps s
 WHERE run_id = %(run_id)s

-- name: complete_step
-- The executed-step hot path, one round trip: the fence (which also reserves the event's seq), the conditional upsert
-- of the completed step and step.completed, in one transaction (tidebase.complete_step). A refusal raises.
SELECT tidebase.complete_step(%(run_id)s, %(token)s, %(key)s, %(step_id)s, %(name)s, %(occurrence)s, %(input_hash)s,
                              %(contract)s::jsonb, %(output)s::jsonb, %(attempt)s, false) AS step_id

-- name: start_step
-- The step decision (tidebase.begin_step) for a step that needs a durable running marker, or that was found
-- interrupted: the attempt number when it may execute (the marker is committed), null when it was parked for review
-- (committed); every other decision raises (tidebase.marker_attempt). The step's options are the wire's keys of its
-- resume contract (what an HTTP client would have sent).
SELECT tidebase.marker_attempt(b.action, b.step, %(run_id)s, %(key)s) AS attempt
  FROM (SELECT %(contract)s::jsonb AS c) contract,
       tidebase.begin_step(%(run_id)s, %(token)s, %(key)s, %(name)s, %(occurrence)s, %(input_hash)s, NULL,
                           jsonb_build_object('sideEffects', c -> 'sideEffects', 'idempotencyKey',
                                              c -> 'idempotencyKey', 'replay', c -> 'replay'), c) AS b

-- name: fail_step
-- Record a failed attempt with its classification: `status` failed_retryable is a retryable failure, `decision` the
-- resume decision (tidebase.fail_step derives the stored status from both, docs/http-api.md#failure-classification).
SELECT id AS step_id
  FROM tidebase.fail_step(%(run_id)s, %(token)s, %(key)s, %(name)s, %(occurrence)s, %(input_hash)s,
                          %(contract)s::jsonb, %(attempt)s, %(status)s = 'failed_retryable', %(decision)s,
                          %(error)s::jsonb, false)

-- name: review_step
-- Operator release (re-run allowed) or skip (complete with a given output) of a parked step.
SELECT tidebase.review_step(%(run_id)s, %(key)s, %(action)s, %(output)s::jsonb, %(actor)s, %(reason)s) AS step_id

-- name: complete_run
-- Complete the run under the holder's token and clear the lease.
SELECT * FROM tidebase.complete_run(%(run_id)s, %(token)s, %(result)s::jsonb)

-- name: fail_run
-- Fail the run under the holder's token (manual_review when a step is parked) and clear the lease.
SELECT * FROM tidebase.fail_run(%(run_id)s, %(token)s, %(error)s::jsonb, %(failure_class)s,
                                %(max_auto_recoveries)s)

-- name: cancel_run
-- Cancel a non-terminal run; idempotent; TB007 for a completed run.
SELECT * FROM tidebase.cancel_run(%(run_id)s, %(reason)s, %(actor)s)

-- name: renew_lease
-- Extend a live lease held under the token (and its holder's step leases); never revives an expired one.
SELECT lease_expires_at AS expires_at FROM tidebase.renew_lease(%(run_id)s, %(token)s)

-- name: append_event
-- Append one event of a caller-defined type under the token.
SELECT tidebase.append_event(%(run_id)s, %(token)s, %(type)s, %(payload)s::jsonb) AS seq

-- name: write_state
-- Set, patch, save or snapshot a state stream; returns the new version row.
SELECT * FROM tidebase.write_state(%(run_id)s, %(token)s, %(stream)s, %(mode)s, %(value)s::jsonb, %(label)s,
                                   %(reason)s, %(importance)s, %(metadata)s::jsonb, %(created_by)s, %(step_key)s,
                                   %(target_type)s, %(target_id)s)

-- name: get_state
-- The current value and version of one state stream.
SELECT current_value, current_version FROM tidebase.state_streams WHERE run_id = %(run_id)s AND name = %(stream)s

-- name: state_versions
-- Every version of one stream, oldest first.
SELECT * FROM tidebase.state_versions WHERE run_id = %(run_id)s AND stream = %(stream)s ORDER BY version

-- name: get_run
-- One run row.
SELECT * FROM tidebase.runs WHERE id = %(run_id)s

-- name: get_steps
-- Every step of a run, in the order they were first written.
SELECT * FROM tidebase.steps WHERE run_id = %(run_id)s ORDER BY created_at, occurrence, key

-- name: events_after
-- A run's events after a position, in seq order.
SELECT id, run_id, seq, type, payload, created_at
  FROM tidebase.events
 WHERE run_id = %(run_id)s AND seq > %(after)s
 ORDER BY seq
 LIMIT %(limit)s

-- name: list_runs
-- Newest runs first, keyset-paginated on (created_at, id).
SELECT * FROM tidebase.runs
 WHERE (created_at, id) < (%(before_at)s, %(before_id)s)
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s

-- name: list_runs_by_status
-- Newest runs of one status first, keyset-paginated.
SELECT * FROM tidebase.runs
 WHERE status = %(status)s AND (created_at, id) < (%(before_at)s, %(before_id)s)
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s

-- name: list_runs_by_workflow
-- Newest runs of one workflow first, keyset-paginated.
SELECT * FROM tidebase.runs
 WHERE workflow = %(workflow)s AND (created_at, id) < (%(before_at)s, %(before_id)s)
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s

-- name: list_runs_by_status_workflow
-- Newest runs of one workflow and status first, keyset-paginated (status index, workflow filtered).
SELECT * FROM tidebase.runs
 WHERE status = %(status)s AND workflow = %(workflow)s AND (created_at, id) < (%(before_at)s, %(before_id)s)
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s

-- name: list_runs_since
-- Newest runs created at or after `since` first, keyset-paginated (a bounded range of runs_newest).
SELECT * FROM tidebase.runs
 WHERE (created_at, id) < (%(before_at)s, %(before_id)s) AND created_at >= %(since)s
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s

-- name: list_runs_by_status_since
-- Newest runs of one status created at or after `since` first, keyset-paginated (runs_status_newest range).
SELECT * FROM tidebase.runs
 WHERE status = %(status)s AND (created_at, id) < (%(before_at)s, %(before_id)s) AND created_at >= %(since)s
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s

-- name: list_runs_by_workflow_since
-- Newest runs of one workflow created at or after `since` first, keyset-paginated (runs_workflow_newest range).
SELECT * FROM tidebase.runs
 WHERE workflow = %(workflow)s AND (created_at, id) < (%(before_at)s, %(before_id)s) AND created_at >= %(since)s
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s

-- name: list_runs_by_status_workflow_since
-- Newest runs of one workflow and status created at or after `since` first (status index range, workflow filtered).
SELECT * FROM tidebase.runs
 WHERE status = %(status)s AND workflow = %(workflow)s AND (created_at, id) < (%(before_at)s, %(before_id)s)
   AND created_at >= %(since)s
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s

-- name: schema_state
-- The applied schema version, the name of migration 1 (the baseline) and one checksum of the applied function files
-- (tidebase.sql.functions_checksum computes the expected one): the one round trip that tells a current database.
-- UndefinedTable when either ledger is missing.
SELECT (SELECT max(version) FROM tidebase.schema_migrations) AS version,
       (SELECT name FROM tidebase.schema_migrations WHERE version = 1) AS baseline,
       (SELECT encode(sha256(convert_to(coalesce(string_agg(name || ' ' || checksum || E'\n', ''
                                                            ORDER BY name COLLATE "C"), ''), 'UTF8')), 'hex')
          FROM tidebase.schema_functions) AS functions

-- name: schema_version
-- The highest applied migration, or nothing when the schema was never installed.
SELECT max(version) AS version FROM tidebase.schema_migrations

-- name: bootstrap_migrations
-- The schema and the migration ledger, created idempotently under the migration lock.
CREATE SCHEMA IF NOT EXISTS tidebase;
CREATE TABLE IF NOT EXISTS tidebase.schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)

-- name: bootstrap_functions
-- The ledger of applied function files, created idempotently under the migration lock.
CREATE TABLE IF NOT EXISTS tidebase.schema_functions (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)

-- name: applied_migrations
-- Applied migrations with their checksums.
SELECT version, name, checksum FROM tidebase.schema_migrations ORDER BY version

-- name: record_migration
-- Record one applied migration, in the transaction that applied it.
INSERT INTO tidebase.schema_migrations (version, name, checksum) VALUES (%(version)s, %(name)s, %(checksum)s)

-- name: applied_functions
-- Applied function files with their checksums.
SELECT name, checksum FROM tidebase.schema_functions ORDER BY name

-- name: functions_unchecked
-- Let the function file of this transaction be created in any order: bodies are checked when first run.
SET LOCAL check_function_bodies = off

-- name: record_function
-- Record the checksum of one applied function file, in the transaction that applied it.
INSERT INTO tidebase.schema_functions (name, checksum) VALUES (%(name)s, %(checksum)s)
ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = clock_timestamp()

-- name: forget_functions
-- Forget the ledger rows of function files this package no longer ships (their functions are dropped by the file
-- or migration that removed them).
DELETE FROM tidebase.schema_functions WHERE name <> ALL (%(names)s::text[])

-- name: migration_lock
-- Take the session advisory lock that serializes migration runners (waits up to lock_timeout).
SELECT pg_advisory_lock(%(key)s)

-- name: migration_unlock
-- Release the migration lock.
SELECT pg_advisory_unlock(%(key)s)

-- name: set_lock_timeout
-- Bound how long the migration runner waits for the lock.
SELECT set_config('lock_timeout', %(timeout)s, false)

-- name: lift_statement_timeout
-- Let migrations run as long as they need (building an index on a big table may take minutes).
SELECT set_config('statement_timeout', '0', false)

-- name: reset_statement_timeout
-- Back to the session's own statement timeout (the one its connection parameters set).
RESET statement_timeout

-- name: repeatable_read
-- Make the current transaction read one consistent snapshot.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ

-- name: begin_gate
-- Open the gate (run, name) once, or return the existing one; `created` says which. A creation queues the
-- gate.created deliveries that carry the resolve token. `channels` are channel specs; `token` null is unfenced.
SELECT (b.gate).*, b.created
  FROM tidebase.begin_gate(%(run_id)s, %(token)s, %(name)s, %(gate_id)s, %(prompt)s, %(data)s::jsonb,
                           %(token_hash)s, %(capability)s::jsonb, %(channels)s::jsonb, %(resolve_token)s) AS b

-- name: resolve_gate
-- Resolve a pending gate exactly once; TB012 (with the winning decision) for every later resolver.
SELECT * FROM tidebase.resolve_gate(%(gate_id)s, %(decision)s, %(actor)s, %(payload)s::jsonb)

-- name: get_gate
-- One gate by id, with the status of its run.
SELECT g.*, r.status AS run_status FROM tidebase.gates g JOIN tidebase.runs r ON r.id = g.run_id
 WHERE g.id = %(gate_id)s

-- name: list_gates
-- Gates of one status across runs, oldest first (the review queue).
SELECT g.*, r.status AS run_status FROM tidebase.gates g JOIN tidebase.runs r ON r.id = g.run_id
 WHERE g.status = %(status)s
 ORDER BY g.created_at, g.id
 LIMIT %(limit)s

-- name: list_gates_of_run
-- Gates of one run (any status when status is null), oldest first.
SELECT g.*, r.status AS run_status FROM tidebase.gates g JOIN tidebase.runs r ON r.id = g.run_id
 WHERE g.run_id = %(run_id)s AND (%(status)s::text IS NULL OR g.status = %(status)s)
 ORDER BY g.created_at, g.id
 LIMIT %(limit)s

-- name: listen_gates
-- Subscribe this session to gate resolutions (the doorbell of waiting gates).
LISTEN tidebase_gates

-- name: unlisten_gates
-- Unsubscribe this session from gate resolutions.
UNLISTEN tidebase_gates

-- name: suspend_run
-- Release the lease of a run that waits for a gate: status waiting (fenced).
SELECT tidebase.suspend_run(%(run_id)s, %(token)s, %(gate_id)s)

-- name: create_child
-- Create the child of (parent, edge name) once, or return it; TB013 when it exists with other workflow or input.
SELECT (c.child).id AS child_id, (c.child).status AS child_status, (c.child).result AS child_result,
       (c.edge).id AS edge_id, c.created
  FROM tidebase.create_child(%(parent_id)s, %(token)s, %(edge_name)s, %(edge_type)s, %(edge_metadata)s::jsonb,
                             %(child_id)s, %(workflow)s, %(input)s::jsonb, %(input_hash)s, %(lease_ms)s) AS c

-- name: edges_of_run
-- The edges where the run is the parent, oldest first.
SELECT * FROM tidebase.run_edges WHERE parent_run_id = %(run_id)s ORDER BY created_at, name

-- name: fork_run
-- Create a run from another's checkpoints up to and including a step.
SELECT * FROM tidebase.fork_run(%(source_id)s, %(at_key)s, %(new_id)s, %(input)s::jsonb, %(input_hash)s)

-- name: record_usage
-- Record one usage entry (any run status) and append usage.recorded.
SELECT * FROM tidebase.record_usage(%(run_id)s, %(usage_id)s, %(step_key)s, %(kind)s, %(provider)s, %(model)s,
                                    %(label)s, %(unit)s, %(quantity)s, %(input_tokens)s, %(output_tokens)s,
                                    %(total_tokens)s, %(cost_usd)s, %(metadata)s::jsonb)

-- name: record_saved_usage
-- Record the usage a replayed step did not spend again (a copy of its original records, marked saved).
SELECT tidebase.record_saved_usage(%(run_id)s, %(step_key)s) AS copied

-- name: usage_of_runs
-- Usage records of the given runs, oldest first.
SELECT * FROM tidebase.usage WHERE run_id = ANY(%(run_ids)s) ORDER BY created_at, id

-- name: run_tree
-- A run and the runs it created as children, recursively: not its forks, nor the children a fork inherited.
WITH RECURSIVE tree (id) AS (
    SELECT %(run_id)s::text
    UNION
    SELECT e.child_run_id FROM tidebase.run_edges e JOIN tree t ON e.parent_run_id = t.id
      JOIN tidebase.runs c ON c.id = e.child_run_id AND c.parent_id = e.parent_run_id
)
SELECT id FROM tree

-- name: labeled_versions
-- Every labelled version of any stream of the run, newest first.
SELECT * FROM tidebase.state_versions WHERE run_id = %(run_id)s AND label IS NOT NULL
 ORDER BY created_at DESC, version DESC

-- name: state_at_version
-- One version of a stream.
SELECT * FROM tidebase.state_versions WHERE run_id = %(run_id)s AND stream = %(stream)s AND version = %(version)s

-- name: state_at_label
-- The newest version of a stream with a label.
SELECT * FROM tidebase.state_versions WHERE run_id = %(run_id)s AND stream = %(stream)s AND label = %(label)s
 ORDER BY version DESC LIMIT 1

-- name: state_at_label_any_stream
-- The newest version with a label in each stream of the run that has one (index state_versions_labeled).
SELECT DISTINCT ON (stream) * FROM tidebase.state_versions
 WHERE run_id = %(run_id)s AND label = %(label)s
 ORDER BY stream, version DESC

-- name: state_at_step
-- The newest version of a stream written before a step completed.
SELECT v.* FROM tidebase.state_versions v
  JOIN tidebase.steps s ON s.run_id = v.run_id AND s.key = %(step_key)s AND s.status = 'completed'
 WHERE v.run_id = %(run_id)s AND v.stream = %(stream)s AND v.created_at <= s.completed_at
 ORDER BY v.version DESC LIMIT 1

-- name: ping
-- A round trip that proves an idle connection (a LISTEN session) still reaches the server.
SELECT 1

-- name: listen_events
-- Register this session as a listener of the event doorbell, then LISTEN (in this order: see tidebase.ring).
SELECT tidebase.register_listener('tidebase_events');
LISTEN tidebase_events

-- name: unlisten_events
-- Stop listening and unregister.
UNLISTEN tidebase_events;
SELECT tidebase.unregister_listener()

-- name: prune_listeners
-- Forget doorbell listeners whose sessions ended, so writers stop notifying for them.
DELETE FROM tidebase.listeners WHERE pid NOT IN (SELECT pid FROM pg_stat_activity) RETURNING pid
