-- Durable timers (run.sleep, run.sleep_until): the statements of tidebase.core.timers_async. The behaviour is in
-- sql/functions/75_timers.sql.

-- name: sleep_timer
-- Start, fire, or suspend the run at timer `key` under the holder's token, in one round trip (tidebase.sleep_timer):
-- the wake time, the database clock's reading, whether the timer fired, and for a suspension the run's new status
-- (queued or waiting) and queue.
SELECT t.wake_at, t.db_now, t.fired, t.suspended, t.queue
  FROM tidebase.sleep_timer(%(run_id)s, %(token)s, %(key)s, %(name)s, %(occurrence)s, %(input_hash)s,
                            %(seconds)s::double precision, %(wake_at)s::timestamptz, %(inline_ms)s::bigint,
                            %(waited)s) t
