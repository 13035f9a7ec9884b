-- The read statements behind `tide.insights`, `tide.queues.list` and `tide.schedules.pause/resume`: what the Studio
-- shows that the other query files do not read. Parameters are %(name)s placeholders. Every statement that can meet a
-- large table is served by an index range of one run, or by an index-only scan (checked by `python -m bench studio`).

-- name: insight_status_counts
-- Runs per status: one index-only count per status on runs_status_newest (never a scan of the heap).
SELECT s.status, (SELECT count(*) FROM tidebase.runs r WHERE r.status = s.status) AS runs
  FROM unnest(%(statuses)s::text[]) AS s(status)

-- name: insight_workflows
-- Distinct workflow names in order, by a loose index scan of runs_workflow_newest (one probe per name).
WITH RECURSIVE w (workflow) AS (
    (SELECT workflow FROM tidebase.runs ORDER BY workflow LIMIT 1)
    UNION ALL
    SELECT (SELECT r.workflow FROM tidebase.runs r WHERE r.workflow > w.workflow ORDER BY r.workflow LIMIT 1)
      FROM w WHERE w.workflow IS NOT NULL
)
SELECT workflow FROM w WHERE workflow IS NOT NULL LIMIT %(limit)s

-- name: insight_pulse
-- Status, attempt and current step of the given runs: primary-key probes, and for the step the newest step event among
-- the run's last 50 events (a bounded backward range of the events primary key).
SELECT r.id, r.workflow, r.status, r.attempt, r.updated_at, r.lease_owner, r.lease_expires_at,
       cur.type AS step_event, cur.step AS step_key
  FROM tidebase.runs r
  LEFT JOIN LATERAL (
      SELECT e.type, e.payload ->> 'name' AS step
        FROM (SELECT seq, type, payload FROM tidebase.events
               WHERE run_id = r.id ORDER BY seq DESC LIMIT 50) e
       WHERE e.type IN ('step.started', 'step.completed', 'step.failed', 'step.reviewed')
       ORDER BY e.seq DESC LIMIT 1
  ) cur ON true
 WHERE r.id = ANY(%(run_ids)s)

-- name: insight_overview
-- One run with what its page header shows beyond the row: step and event counts, when its current attempt started
-- (the newest run.started event), and its parent's status.
SELECT r.*,
       (SELECT count(*) FROM tidebase.steps s WHERE s.run_id = r.id) AS step_count,
       coalesce((SELECT c.event_seq FROM tidebase.event_counters c WHERE c.run_id = r.id), 0) AS event_seq,
       (SELECT e.created_at FROM tidebase.events e
         WHERE e.run_id = r.id AND e.type = 'run.started' ORDER BY e.seq DESC LIMIT 1) AS attempt_started_at,
       p.status AS parent_status
  FROM tidebase.runs r LEFT JOIN tidebase.runs p ON p.id = r.parent_id
 WHERE r.id = %(run_id)s

-- name: insight_child_edges
-- The edges where the run is the parent, with each child's workflow and status, oldest first.
SELECT e.*, c.workflow AS other_workflow, c.status AS other_status
  FROM tidebase.run_edges e JOIN tidebase.runs c ON c.id = e.child_run_id
 WHERE e.parent_run_id = %(run_id)s
 ORDER BY e.created_at, e.name
 LIMIT %(limit)s

-- name: insight_parent_edges
-- The edges where the run is the child (its parent, or the run it was forked from), with that run's status.
SELECT e.*, p.workflow AS other_workflow, p.status AS other_status
  FROM tidebase.run_edges e JOIN tidebase.runs p ON p.id = e.parent_run_id
 WHERE e.child_run_id = %(run_id)s
 ORDER BY e.created_at, e.name

-- name: insight_steps_page
-- One page of a run's steps in the order they were first written (a primary-key range of the run, sorted).
SELECT * FROM tidebase.steps WHERE run_id = %(run_id)s
 ORDER BY created_at, occurrence, key
 LIMIT %(limit)s OFFSET %(offset)s

-- name: insight_step_by_key
-- One step of a run by key.
SELECT * FROM tidebase.steps WHERE run_id = %(run_id)s AND key = %(key)s

-- name: insight_recent_events
-- The newest events of a run (a backward range of the events primary key), returned in seq order.
SELECT * FROM (
    SELECT id, run_id, seq, type, payload, created_at FROM tidebase.events
     WHERE run_id = %(run_id)s ORDER BY seq DESC LIMIT %(limit)s
) e ORDER BY seq

-- name: insight_streams
-- The state streams of a run with their current value and version, oldest first.
SELECT * FROM tidebase.state_streams WHERE run_id = %(run_id)s ORDER BY created_at, name

-- name: insight_versions
-- Versions of one stream below a version, newest first (a backward range of the state_versions primary key).
SELECT * FROM tidebase.state_versions
 WHERE run_id = %(run_id)s AND stream = %(stream)s AND version < %(before)s
 ORDER BY version DESC
 LIMIT %(limit)s

-- name: insight_step_usage
-- Usage of a run summed per step and per spent/saved (records without a step are under a NULL key), for the `limit`
-- steps that spent the most, most first.
WITH sums AS (
    SELECT step_key, saved, count(*) AS records, coalesce(sum(input_tokens), 0) AS input_tokens,
           coalesce(sum(output_tokens), 0) AS output_tokens, coalesce(sum(total_tokens), 0) AS total_tokens,
           coalesce(sum(cost_usd), 0) AS cost_usd
      FROM tidebase.usage WHERE run_id = %(run_id)s
     GROUP BY step_key, saved
), top AS (
    SELECT step_key, sum(cost_usd) FILTER (WHERE NOT saved) AS spent_cost, sum(total_tokens) AS tokens
      FROM sums
     GROUP BY step_key
     ORDER BY spent_cost DESC NULLS LAST, tokens DESC, step_key
     LIMIT %(limit)s
)
SELECT s.* FROM sums s JOIN top t ON t.step_key IS NOT DISTINCT FROM s.step_key
 ORDER BY t.spent_cost DESC NULLS LAST, t.tokens DESC, s.step_key, s.saved

-- name: insight_usage_totals
-- Usage of a run summed over all its records, spent and saved.
SELECT saved, count(*) AS records, coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens, coalesce(sum(total_tokens), 0) AS total_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd
  FROM tidebase.usage WHERE run_id = %(run_id)s
 GROUP BY saved

-- name: insight_decisions
-- Resolved gates across runs, newest decision first, with their run's workflow and status.
SELECT g.*, r.status AS run_status, r.workflow
  FROM tidebase.gates g JOIN tidebase.runs r ON r.id = g.run_id
 WHERE g.status <> 'pending'
 ORDER BY g.resolved_at DESC, g.id DESC
 LIMIT %(limit)s

-- name: insight_usage_by_day
-- Usage summed per UTC day, workflow and spent/saved since a time.
SELECT (u.created_at AT TIME ZONE 'UTC')::date AS day, r.workflow, u.saved, count(*) AS records,
       coalesce(sum(u.input_tokens), 0) AS input_tokens, coalesce(sum(u.output_tokens), 0) AS output_tokens,
       coalesce(sum(u.total_tokens), 0) AS total_tokens, coalesce(sum(u.cost_usd), 0) AS cost_usd
  FROM tidebase.usage u JOIN tidebase.runs r ON r.id = u.run_id
 WHERE u.created_at >= %(since)s
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3

-- name: list_queues
-- Every queue that has runs or a config, by name, with its caps and live queued and running counts: the names by a
-- loose index scan of runs_queue_status, the counts by index-only scans of it.
WITH RECURSIVE q (queue) AS (
    (SELECT queue FROM tidebase.runs WHERE queue IS NOT NULL ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT r.queue FROM tidebase.runs r WHERE r.queue IS NOT NULL AND r.queue > q.queue
             ORDER BY r.queue LIMIT 1)
      FROM q WHERE q.queue IS NOT NULL
), names AS (
    SELECT queue FROM q WHERE queue IS NOT NULL
    UNION
    SELECT queue FROM tidebase.queue_config
)
SELECT n.queue, c.concurrency, c.rate_limit, c.rate_window_ms, coalesce(c.paused, false) AS paused,
       (SELECT count(*) FROM tidebase.runs r WHERE r.queue = n.queue AND r.status = 'queued') AS queued,
       (SELECT count(*) FROM tidebase.runs r WHERE r.queue = n.queue AND r.status = 'running') AS running
  FROM names n LEFT JOIN tidebase.queue_config c ON c.queue = n.queue
 ORDER BY n.queue

-- name: set_schedule_enabled
-- Pause or resume a schedule; a resume also moves its next fire time (fires while paused are skipped, not missed).
-- The reconciler fires only enabled schedules in the statement that moves next_fire_at, so a pause is never raced.
UPDATE tidebase.schedules
   SET enabled = %(enabled)s, next_fire_at = coalesce(%(next_fire_at)s, next_fire_at), updated_at = tidebase.now()
 WHERE name = %(name)s
RETURNING *
