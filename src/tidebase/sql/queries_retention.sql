-- Retention: the statements of `tide.gc(...)` and of the reconciler's periodic retention
-- (tidebase.ops.retention_async; the batch itself is tidebase.gc_batch in functions/93_retention.sql).

-- name: retention_cutoff
-- The cutoff of a retention pass: the database clock minus the age, so no client clock decides what is old.
SELECT tidebase.now() - %(older_than_seconds)s::float8 * interval '1 second' AS cutoff

-- name: gc_batch
-- One batch of retention in its own transaction: delete (or, dry, count) the next finished run trees after the cursor.
SELECT * FROM tidebase.gc_batch(%(cutoff)s::timestamptz, %(statuses)s::text[], %(after_at)s::timestamptz,
                                %(after_id)s::text, %(limit)s::integer, %(dry_run)s::boolean)
