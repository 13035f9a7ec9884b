-- Tidebase schema, version 3: retention (`tidebase gc`, `tide.gc(...)`, sql/functions/93_retention.sql).
--
-- Retention deletes whole finished run trees, oldest first, a bounded batch per transaction. A batch finds its
-- candidates, the finished root runs created before the cutoff, with one range scan of this partial index, read
-- in (created_at, id) order from a keyset cursor: it never reads a live run, a child run, or a run it already
-- examined in the same pass. The key is the creation time because it never changes: a finished run's own finish
-- time (completed_at, or updated_at for a failed run) is always later, so `created_at < cutoff` is a necessary
-- condition that the batch completes under the row lock. Keying on updated_at instead would cost every step a
-- non-HOT update of the run row (tidebase.next_seq moves updated_at), which this index avoids: its columns and its
-- predicate (status, parent_id) are ones the hot path never changes or that are indexed already.
--
-- Everything else a batch reads is served by existing indexes: descendants by runs_parent, a run's rows in every
-- table by the primary keys that lead with run_id, deliveries by outbox_run, incoming edges by run_edges_child.
--
-- The index is built here without CONCURRENTLY (a migration is one transaction): on a large runs table the
-- migration holds writes to runs for the length of the build.

CREATE INDEX runs_retention ON tidebase.runs (created_at, id)
    WHERE parent_id IS NULL AND status IN ('completed', 'failed', 'cancelled');
