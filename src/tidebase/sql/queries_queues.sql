-- Statements of queues, workers, the reconciler, schedules and the webhook outbox. Parameters are %(name)s
-- placeholders; the transitions themselves are functions of functions/90_queues_and_claims.sql, 91_recovery.sql,
-- 92_schedules.sql and 95_webhooks.sql.

-- name: enqueue_run
-- Create a queued run, or return the active duplicate of (queue, dedupe key) or the run with this id. It becomes
-- available at `run_at`, else `delay_ms` after now; its deadline is `deadline`, else `deadline_ms` after now (the
-- database clock decides both).
SELECT (q.run).*, q.created
  FROM tidebase.enqueue_run(%(run_id)s, %(workflow)s, %(input)s::jsonb, %(input_hash)s, %(metadata)s::jsonb,
                            %(queue)s, %(priority)s, %(dedupe_key)s,
                            coalesce(%(run_at)s::timestamptz,
                                     tidebase.now() + %(delay_ms)s::bigint * interval '1 millisecond'),
                            %(max_attempts)s, %(backoff_ms)s,
                            coalesce(%(deadline)s::timestamptz,
                                     tidebase.now() + %(deadline_ms)s::bigint * interval '1 millisecond'),
                            %(lease_ms)s, %(webhooks)s::jsonb, %(recovery_webhook)s, %(recovery_secret)s) AS q

-- name: claim_runs
-- Claim up to `limit` due runs of the queues (and registered workflows) under the queues' caps; each gets a lease.
SELECT * FROM tidebase.claim_runs(%(owner)s, %(queues)s, %(workflows)s, %(limit)s, %(lease_ms)s)

-- name: release_run
-- Hand a claimed run back to its queue (worker shutdown), fenced by the token.
SELECT tidebase.release_run(%(run_id)s, %(token)s, %(reason)s)

-- name: unserved_workflows
-- (queue, workflow) pairs, at most `limit`, of runs that a worker registering only `workflows` never claims: among
-- the first `scan` due runs of each queue in claim order (runs_queue_due, a bounded range per queue), those due for
-- at least `grace_ms` whose workflow is not in `workflows`. The cutoff is computed once, so that it can bound the
-- index range (tidebase.now() is volatile).
SELECT DISTINCT q.queue, r.workflow
  FROM (SELECT tidebase.now() - %(grace_ms)s::bigint * interval '1 millisecond' AS cutoff) c
 CROSS JOIN unnest(%(queues)s::text[]) AS q (queue)
 CROSS JOIN LATERAL (
       SELECT workflow FROM tidebase.runs
        WHERE status = 'queued' AND queue = q.queue AND available_at <= c.cutoff
        ORDER BY priority DESC, available_at, created_at, id
        LIMIT %(scan)s) r
 WHERE r.workflow <> ALL (%(workflows)s::text[])
 ORDER BY r.workflow, q.queue
 LIMIT %(limit)s

-- name: configure_queue
-- Set a queue's concurrency and rate caps (NULL: unlimited) and whether it is paused.
SELECT * FROM tidebase.configure_queue(%(queue)s, %(concurrency)s, %(rate_limit)s, %(rate_window_ms)s, %(paused)s)

-- name: get_queue
-- One queue's config with its live counts (queued and due, running).
SELECT %(queue)s::text AS queue, c.concurrency, c.rate_limit, c.rate_window_ms, coalesce(c.paused, false) AS paused,
       (SELECT count(*) FROM tidebase.runs WHERE queue = %(queue)s AND status = 'queued') AS queued,
       (SELECT count(*) FROM tidebase.runs WHERE queue = %(queue)s AND status = 'running') AS running
  FROM (SELECT 1) one LEFT JOIN tidebase.queue_config c ON c.queue = %(queue)s

-- name: reconciler_try_lock
-- Take the reconciler's session advisory lock if no other reconciler holds it.
SELECT pg_try_advisory_lock(hashtext('tidebase.reconciler')) AS locked

-- name: reconciler_unlock
-- Release the reconciler's advisory lock.
SELECT pg_advisory_unlock(hashtext('tidebase.reconciler')) AS unlocked

-- name: recover_expired
-- Requeue up to `limit` runs whose lease expired, recording a recovery for each.
SELECT * FROM tidebase.recover_expired(%(actor)s, %(limit)s)

-- name: recover_expired_webhooks
-- Schedule lease_expired recovery webhooks for runs off any queue whose lease expired (automatic policy).
SELECT id FROM tidebase.recover_expired_webhooks(%(limit)s, %(max_auto_recoveries)s) AS id

-- name: dispatch_push
-- Offer ready runs of queues with an invoke URL to the application by run.invoke webhooks.
SELECT public_id FROM tidebase.dispatch_push(%(limit)s)

-- name: cancel_overdue
-- Cancel up to `limit` runs past their deadline (reason `deadline`).
SELECT id FROM tidebase.cancel_overdue(%(actor)s, %(limit)s) AS id

-- name: due_schedules
-- Enabled schedules whose next fire time has come (index schedules_due).
SELECT name, cron, next_fire_at FROM tidebase.schedules
 WHERE enabled AND next_fire_at <= tidebase.now()
 ORDER BY next_fire_at
 LIMIT %(limit)s

-- name: db_now
-- The database clock (tidebase.now(), which tests may pin).
SELECT tidebase.now() AS now

-- name: fire_schedule
-- Fire one schedule once for a fire time: record missed fires, enqueue, move next_fire_at. NULL when already fired.
SELECT tidebase.fire_schedule(%(name)s, %(fire_at)s, %(missed)s::timestamptz[], %(next)s, %(actor)s,
                              %(lease_ms)s) AS run_id

-- name: set_schedule
-- Create or replace a schedule; next_fire_at is computed by the caller from the cron expression.
INSERT INTO tidebase.schedules (name, cron, workflow, input, input_hash, queue, priority, max_attempts, enabled,
                                next_fire_at)
VALUES (%(name)s, %(cron)s, %(workflow)s, %(input)s::jsonb, %(input_hash)s, %(queue)s, %(priority)s,
        %(max_attempts)s, %(enabled)s, %(next_fire_at)s)
ON CONFLICT (name) DO UPDATE
   SET cron = excluded.cron, workflow = excluded.workflow, input = excluded.input, input_hash = excluded.input_hash,
       queue = excluded.queue, priority = excluded.priority, max_attempts = excluded.max_attempts,
       enabled = excluded.enabled, next_fire_at = excluded.next_fire_at, updated_at = tidebase.now()
RETURNING *

-- name: get_schedule
-- One schedule.
SELECT * FROM tidebase.schedules WHERE name = %(name)s

-- name: list_schedules
-- Every schedule, by name.
SELECT * FROM tidebase.schedules ORDER BY name

-- name: delete_schedule
-- Remove a schedule (and its fire history).
DELETE FROM tidebase.schedules WHERE name = %(name)s RETURNING name

-- name: schedule_fires
-- A schedule's fire history, newest first (enqueued and missed fire times).
SELECT * FROM tidebase.schedule_fires WHERE schedule = %(name)s ORDER BY fire_at DESC LIMIT %(limit)s

-- name: recoveries_of_run
-- Every recovery attempt of a run, oldest first.
SELECT * FROM tidebase.recoveries WHERE run_id = %(run_id)s ORDER BY detected_at, id

-- name: recover_run
-- Operator recovery of a run nobody executes: back on a queue now, recorded; TB009 says precisely why not.
SELECT * FROM tidebase.recover_run(%(run_id)s, %(actor)s, %(queue)s)

-- name: claim_deliveries
-- Claim up to `limit` due webhook deliveries, held for `hold_ms` while this dispatcher delivers them.
SELECT * FROM tidebase.claim_deliveries(%(limit)s, %(hold_ms)s)

-- name: set_delivery_body
-- Keep the rendered body of a delivery for every try, and drop what it was rendered from.
UPDATE tidebase.outbox SET body = %(body)s, source = NULL WHERE id = %(id)s

-- name: record_delivery
-- Record one delivery try and its outcome (delivered, retried after `retry_ms`, or failed for good).
SELECT tidebase.record_delivery(%(id)s, %(attempt)s, %(started_at)s, %(duration_ms)s, %(status_code)s, %(error)s,
                                %(ok)s, %(retry)s, %(retry_ms)s, %(response)s, %(max_attempts)s)

-- name: deliveries_of_run
-- A run's webhook deliveries with their attempts, without secrets or resolve tokens (tidebase.public_delivery).
SELECT d.*, coalesce((SELECT jsonb_agg(to_jsonb(a) ORDER BY a.attempt) FROM tidebase.outbox_attempts a
                       WHERE a.outbox_id = o.id), '[]') AS attempt_log
  FROM tidebase.outbox o, tidebase.public_delivery(o) d WHERE o.run_id = %(run_id)s ORDER BY o.id

-- name: http_configure_queue
-- Upsert a queue's config from the HTTP API: a field whose `set_` flag is false keeps its stored value, a set null
-- clears it. The rate is per minute (a 60 s sliding window).
INSERT INTO tidebase.queue_config (queue, concurrency, rate_limit, rate_window_ms, invoke_url)
VALUES (%(queue)s, %(concurrency)s, %(rate)s, 60000, %(invoke_url)s)
ON CONFLICT (queue) DO UPDATE
   SET concurrency = CASE WHEN %(set_concurrency)s THEN excluded.concurrency ELSE queue_config.concurrency END,
       rate_limit = CASE WHEN %(set_rate)s THEN excluded.rate_limit ELSE queue_config.rate_limit END,
       rate_window_ms = CASE WHEN %(set_rate)s THEN 60000 ELSE queue_config.rate_window_ms END,
       invoke_url = CASE WHEN %(set_invoke_url)s THEN excluded.invoke_url ELSE queue_config.invoke_url END,
       updated_at = tidebase.now()
RETURNING *

-- name: queue_stats
-- Every queue (with runs or a config) by name: counts per wire status (waiting and pending are not counted) and
-- its config. Served by the index runs_queue_status.
WITH counts AS (
    SELECT queue,
           count(*) FILTER (WHERE status = 'queued') AS queued,
           count(*) FILTER (WHERE status = 'running') AS running,
           count(*) FILTER (WHERE status IN ('failed', 'manual_review')) AS failed,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled
      FROM tidebase.runs WHERE queue IS NOT NULL GROUP BY queue
)
SELECT coalesce(n.queue, c.queue) AS name, coalesce(n.queued, 0) AS queued, coalesce(n.running, 0) AS running,
       coalesce(n.failed, 0) AS failed, coalesce(n.completed, 0) AS completed, coalesce(n.cancelled, 0) AS cancelled,
       c.queue AS config_queue, c.concurrency, c.rate_limit, c.rate_window_ms, c.invoke_url
  FROM counts n FULL JOIN tidebase.queue_config c ON c.queue = n.queue
 ORDER BY 1

-- name: http_claim
-- Claim up to `limit` due runs of the queues, in the caller's order, for `owner` (any workflow).
SELECT * FROM tidebase.claim_runs(%(owner)s, %(queues)s, NULL, %(limit)s, %(lease_ms)s)

-- name: request_recovery
-- Schedule a manual run.resume webhook (none when the run has no recovery webhook), shown without its secret.
SELECT d.* FROM tidebase.request_recovery(%(run_id)s, %(reason)s) o, tidebase.public_delivery(o) d

-- name: recovery_webhooks_of_run
-- A run's recovery and invoke webhooks (RecoveryAttempts), oldest first, without their secrets.
SELECT d.* FROM tidebase.outbox o, tidebase.public_delivery(o) d
 WHERE o.run_id = %(run_id)s AND o.kind = 'recovery' ORDER BY o.id

-- name: channel_deliveries_of_run
-- A run's channel deliveries, oldest first, without secrets or resolve tokens.
SELECT d.* FROM tidebase.outbox o, tidebase.public_delivery(o) d
 WHERE o.run_id = %(run_id)s AND o.kind = 'channel' ORDER BY o.id
