-- Tidebase schema, version 2: LangGraph threads (tidebase.integrations.langgraph.TidebaseSaver).
--
-- A LangGraph thread is a Tidebase run (workflow `langgraph` by default): the run row carries the thread's lease and
-- fencing token, and its event log records every checkpoint and every batch of pending writes. What LangGraph itself
-- stores lives in the three tables below, each tied to the thread's run (deleting the run deletes them):
--
-- *Checkpoints* (one row per LangGraph checkpoint, per namespace of the thread): the checkpoint without its channel
-- values (jsonb: id, ts, channel_versions, versions_seen, ...), its metadata (jsonb, filterable with @>), the parent
-- checkpoint it was written after, and `seq`, the event seq of its `langgraph.checkpoint` event (in a copied thread,
-- of the run.created event that copied it). Checkpoint ids are LangGraph's time-ordered ids, compared byte-wise
-- (COLLATE "C"): newest first is `checkpoint_id DESC`.
--
-- *Blobs* hold channel values, one per (namespace, channel, version), as LangGraph's serializer encoded them (a type
-- tag and bytes); a checkpoint names the versions it reads in its channel_versions, so an unchanged channel is stored
-- once however many checkpoints read it. Type `empty` (no bytes) marks a channel with no value at that version.
--
-- *Writes* are pending writes of a checkpoint's tasks, one per (task, index): special channels (errors, interrupts,
-- resume values) use LangGraph's negative indexes. `task_path` orders a super-step's writes as LangGraph applies
-- them.

CREATE TABLE tidebase.langgraph_checkpoints (
    run_id                  text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    checkpoint_ns           text COLLATE "C" NOT NULL DEFAULT '',
    checkpoint_id           text COLLATE "C" NOT NULL,
    parent_checkpoint_id    text COLLATE "C",
    thread_id               text NOT NULL,
    checkpoint              jsonb NOT NULL,
    metadata                jsonb NOT NULL DEFAULT '{}',
    langgraph_run_id        text GENERATED ALWAYS AS (metadata ->> 'run_id') STORED,
    seq                     bigint NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT tidebase.now(),
    PRIMARY KEY (run_id, checkpoint_ns, checkpoint_id)
);
-- delete_for_runs finds a LangGraph run's checkpoints across threads.
CREATE INDEX langgraph_checkpoints_langgraph_run ON tidebase.langgraph_checkpoints (langgraph_run_id)
    WHERE langgraph_run_id IS NOT NULL;

CREATE TABLE tidebase.langgraph_blobs (
    run_id                  text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    checkpoint_ns           text COLLATE "C" NOT NULL DEFAULT '',
    channel                 text COLLATE "C" NOT NULL,
    version                 text COLLATE "C" NOT NULL,
    type                    text NOT NULL,
    blob                    bytea,
    PRIMARY KEY (run_id, checkpoint_ns, channel, version)
);

CREATE TABLE tidebase.langgraph_writes (
    run_id                  text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    checkpoint_ns           text COLLATE "C" NOT NULL DEFAULT '',
    checkpoint_id           text COLLATE "C" NOT NULL,
    task_id                 text COLLATE "C" NOT NULL,
    idx                     integer NOT NULL,
    channel                 text NOT NULL,
    type                    text NOT NULL,
    blob                    bytea,
    task_path               text COLLATE "C" NOT NULL DEFAULT '',
    created_at              timestamptz NOT NULL DEFAULT tidebase.now(),
    PRIMARY KEY (run_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
