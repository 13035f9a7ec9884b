-- Tidebase schema, version 2: approval gates, parent/child edges, the usage ledger, snapshots and forks.
--
-- *Gates* are human decisions inside a run, one per (run, name). A gate is created once (the unique key), resolved
-- exactly once (a conditional update on status = 'pending'), and its decision is replayed to every later caller. Its
-- resolve token is never stored: only its SHA-256, which the library compares in constant time.
--
-- *Run edges* link a parent run to a child run under an edge name, unique per parent: a child is created once per
-- (parent, name), also when many callers race or a parent is resumed. A fork is an edge of type `fork` from the source.
--
-- *Usage* records what a run spent (tokens, cost), with its step when known. A record with `saved = true` is the
-- usage that a replayed step did not spend again: a copy of what its original execution recorded.
--
-- Lock order, everywhere: the run row first (tidebase.fence or tidebase.lock_run), then the rows of the run's gates,
-- edges and streams. Every function that appends an event takes seqs from tidebase.next_seq while it holds the run
-- row, so the event log stays gap-free.
--
-- New SQLSTATEs: TB011 gate not found, TB012 gate already resolved (DETAIL = the winning decision), TB013 child edge
-- exists with another workflow or input.

CREATE TABLE tidebase.gates (
    run_id              text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    name                text NOT NULL,
    id                  text NOT NULL,
    prompt              text NOT NULL DEFAULT '',
    data                jsonb NOT NULL DEFAULT '{}',
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'approved', 'rejected', 'canceled')),
    decision            text,
    actor               text,
    payload             jsonb,
    token_hash          text NOT NULL,
    capability          jsonb,
    channels            jsonb NOT NULL DEFAULT '[]',
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    updated_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    resolved_at         timestamptz,
    PRIMARY KEY (run_id, name),
    CHECK ((status = 'pending') = (decision IS NULL))
);
CREATE UNIQUE INDEX gates_id ON tidebase.gates (id);
CREATE INDEX gates_pending ON tidebase.gates (created_at, id) WHERE status = 'pending';

CREATE TABLE tidebase.run_edges (
    parent_run_id       text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    name                text NOT NULL,
    id                  text NOT NULL,
    child_run_id        text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    edge_type           text NOT NULL DEFAULT 'child',
    metadata            jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    PRIMARY KEY (parent_run_id, name)
);
CREATE INDEX run_edges_child ON tidebase.run_edges (child_run_id);

CREATE TABLE tidebase.usage (
    run_id              text NOT NULL REFERENCES tidebase.runs (id) ON DELETE CASCADE,
    id                  text NOT NULL,
    step_key            text,
    kind                text NOT NULL DEFAULT 'custom',
    provider            text,
    model               text,
    label               text,
    unit                text,
    quantity            double precision,
    input_tokens        bigint CHECK (input_tokens >= 0),
    output_tokens       bigint CHECK (output_tokens >= 0),
    total_tokens        bigint CHECK (total_tokens >= 0),
    cost_usd            numeric CHECK (cost_usd >= 0),
    metadata            jsonb NOT NULL DEFAULT '{}',
    saved               boolean NOT NULL DEFAULT false,
    saved_from          text,
    created_at          timestamptz NOT NULL DEFAULT tidebase.now(),
    PRIMARY KEY (run_id, id)
);
CREATE INDEX usage_step ON tidebase.usage (run_id, step_key) WHERE step_key IS NOT NULL;

-- Takes the next n seqs of a run whose row this transaction already holds (or locks it now), and rings the doorbell.
CREATE FUNCTION tidebase.next_seq(p_run_id text, p_events integer DEFAULT 1) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    UPDATE tidebase.runs SET event_seq = event_seq + p_events, updated_at = tidebase.now()
     WHERE id = p_run_id
    RETURNING event_seq INTO v_seq;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    END IF;
    PERFORM tidebase.ring(p_run_id);
    RETURN v_seq - p_events + 1;
END
$$;

-- Locks the run row for a write that may or may not append events (fenced by token when one is given; terminal
-- runs refuse), without reserving a seq.
CREATE FUNCTION tidebase.lock_run(p_run_id text, p_token bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tidebase.fence(p_run_id, p_token, 0);
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Gates.

-- Opens the gate (run, name) or returns the existing one; `created` tells which. Only a creation appends gate.created.
CREATE FUNCTION tidebase.begin_gate(
    p_run_id text, p_token bigint, p_name text, p_id text, p_prompt text, p_data jsonb, p_token_hash text,
    p_capability jsonb, p_channels jsonb, OUT gate tidebase.gates, OUT created boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    PERFORM tidebase.lock_run(p_run_id, p_token);
    SELECT * INTO gate FROM tidebase.gates WHERE run_id = p_run_id AND name = p_name;
    IF FOUND THEN
        created := false;
        RETURN;
    END IF;
    INSERT INTO tidebase.gates (run_id, name, id, prompt, data, token_hash, capability, channels)
    VALUES (p_run_id, p_name, p_id, coalesce(p_prompt, ''), coalesce(p_data, '{}'), p_token_hash, p_capability,
            coalesce(p_channels, '[]'))
    RETURNING * INTO gate;
    v_seq := tidebase.next_seq(p_run_id);
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'gate.created',
            jsonb_build_object('gateId', gate.id, 'name', gate.name, 'prompt', gate.prompt, 'data', gate.data));
    created := true;
END
$$;

-- Resolves a pending gate exactly once. Losers get TB012 with the winning decision in DETAIL. Terminal runs refuse.
CREATE FUNCTION tidebase.resolve_gate(
    p_gate_id text, p_decision text, p_actor text, p_payload jsonb
) RETURNS SETOF tidebase.gates
LANGUAGE plpgsql AS $$
DECLARE
    g tidebase.gates%ROWTYPE;
    v_seq bigint;
BEGIN
    SELECT * INTO g FROM tidebase.gates WHERE id = p_gate_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gate % not found', p_gate_id USING ERRCODE = 'TB011';
    END IF;
    PERFORM tidebase.lock_run(g.run_id, NULL);
    UPDATE tidebase.gates
       SET status = p_decision, decision = p_decision, actor = p_actor, payload = coalesce(p_payload, '{}'),
           resolved_at = tidebase.now(), updated_at = tidebase.now()
     WHERE id = p_gate_id AND status = 'pending'
    RETURNING * INTO g;
    IF NOT FOUND THEN
        SELECT * INTO g FROM tidebase.gates WHERE id = p_gate_id;
        RAISE EXCEPTION 'gate % is already resolved (%)', p_gate_id, g.decision
            USING ERRCODE = 'TB012', DETAIL = g.decision, HINT = coalesce(g.actor, '');
    END IF;
    v_seq := tidebase.next_seq(g.run_id);
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (g.run_id, v_seq, 'gate.resolved',
            jsonb_build_object('gateId', g.id, 'name', g.name, 'decision', g.decision, 'actor', g.actor,
                               'payload', g.payload));
    PERFORM pg_notify('tidebase_gates', g.id);
    RETURN NEXT g;
END
$$;

-- Parks a run that waits for a gate: status waiting, lease released (fenced by the holder's token).
CREATE FUNCTION tidebase.suspend_run(p_run_id text, p_token bigint, p_gate_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
BEGIN
    UPDATE tidebase.runs
       SET status = 'waiting', lease_owner = NULL, lease_expires_at = NULL, updated_at = tidebase.now()
     WHERE id = p_run_id;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'run.suspended', jsonb_build_object('gateId', p_gate_id));
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Children and forks.

-- Creates the child run of (parent, edge name) once, or returns the existing one (created = false). An existing
-- edge whose child has another workflow or input raises TB013. The parent's row lock serializes racing creators.
CREATE FUNCTION tidebase.create_child(
    p_parent_id text, p_token bigint, p_edge_name text, p_edge_type text, p_edge_metadata jsonb,
    p_child_id text, p_workflow text, p_input jsonb, p_input_hash text, p_lease_ms integer,
    OUT child tidebase.runs, OUT edge tidebase.run_edges, OUT created boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    PERFORM tidebase.lock_run(p_parent_id, p_token);
    SELECT * INTO edge FROM tidebase.run_edges WHERE parent_run_id = p_parent_id AND name = p_edge_name;
    IF FOUND THEN
        SELECT * INTO child FROM tidebase.runs WHERE id = edge.child_run_id;
        IF child.workflow <> p_workflow OR child.input_hash <> p_input_hash THEN
            RAISE EXCEPTION 'child % of run % exists with another workflow or input', p_edge_name, p_parent_id
                USING ERRCODE = 'TB013', DETAIL = edge.child_run_id;
        END IF;
        created := false;
        RETURN;
    END IF;
    SELECT * INTO child FROM tidebase.create_run(p_child_id, p_workflow, p_input, p_input_hash, true,
                                                 jsonb_build_object('parentRunId', p_parent_id,
                                                                    'parentEdgeName', p_edge_name),
                                                 p_parent_id, p_lease_ms);
    INSERT INTO tidebase.run_edges (parent_run_id, name, id, child_run_id, edge_type, metadata)
    VALUES (p_parent_id, p_edge_name, tidebase.new_id('edge_'), child.id, coalesce(p_edge_type, 'child'),
            coalesce(p_edge_metadata, '{}'))
    RETURNING * INTO edge;
    v_seq := tidebase.next_seq(p_parent_id);
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_parent_id, v_seq, 'run.child.created',
            jsonb_build_object('childRunId', child.id, 'edge', p_edge_name, 'edgeType', edge.edge_type,
                               'workflowName', p_workflow));
    created := true;
END
$$;

-- Creates run p_new_id from run p_source_id: the source's completed checkpoints up to and including step p_at_key
-- (by completion order), its resolved gates and its state versions up to that point, and an edge of type `fork`.
-- The source run is not modified.
CREATE FUNCTION tidebase.fork_run(
    p_source_id text, p_at_key text, p_new_id text, p_input jsonb, p_input_hash text
) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    src tidebase.runs%ROWTYPE;
    cut tidebase.steps%ROWTYPE;
    r tidebase.runs%ROWTYPE;
    v_seq bigint;
BEGIN
    SELECT * INTO src FROM tidebase.runs WHERE id = p_source_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_source_id USING ERRCODE = 'TB001';
    END IF;
    SELECT * INTO cut FROM tidebase.steps WHERE run_id = p_source_id AND key = p_at_key AND status = 'completed';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % has no completed step %', p_source_id, p_at_key USING ERRCODE = 'TB008';
    END IF;
    INSERT INTO tidebase.runs (id, workflow, input, input_hash, metadata, lease_ms, event_seq)
    VALUES (p_new_id, src.workflow, coalesce(p_input, src.input), coalesce(p_input_hash, src.input_hash),
            jsonb_build_object('forkedFrom', p_source_id, 'forkedAtStep', p_at_key), src.lease_ms, 0)
    RETURNING * INTO r;
    INSERT INTO tidebase.steps (run_id, key, id, name, occurrence, input_hash, contract, status, output, attempt,
                                started_at, completed_at, created_at, updated_at)
    SELECT p_new_id, key, tidebase.new_id('step_'), name, occurrence, input_hash, contract, 'completed', output,
           attempt, started_at, completed_at, created_at, updated_at
      FROM tidebase.steps
     WHERE run_id = p_source_id AND status = 'completed' AND (completed_at, key) <= (cut.completed_at, cut.key);
    INSERT INTO tidebase.gates (run_id, name, id, prompt, data, status, decision, actor, payload, token_hash,
                                capability, channels, created_at, updated_at, resolved_at)
    SELECT p_new_id, name, tidebase.new_id('gate_'), prompt, data, status, decision, actor, payload, token_hash,
           capability, channels, created_at, updated_at, resolved_at
      FROM tidebase.gates
     WHERE run_id = p_source_id AND status <> 'pending' AND resolved_at <= cut.completed_at;
    INSERT INTO tidebase.state_streams (run_id, name, id, target_type, target_id, current_version, current_value,
                                        metadata, created_at, updated_at)
    SELECT p_new_id, s.name, tidebase.new_id('stream_'), s.target_type,
           CASE WHEN s.target_type = 'run' THEN p_new_id ELSE s.target_id END, v.version, v.value, s.metadata,
           s.created_at, v.created_at
      FROM tidebase.state_streams s
      JOIN LATERAL (SELECT version, value, created_at FROM tidebase.state_versions
                     WHERE run_id = p_source_id AND stream = s.name AND created_at <= cut.completed_at
                     ORDER BY version DESC LIMIT 1) v ON true
     WHERE s.run_id = p_source_id;
    INSERT INTO tidebase.state_versions (run_id, stream, version, id, value, patch, label, reason, importance,
                                         metadata, step_key, created_by, created_at)
    SELECT p_new_id, v.stream, v.version, tidebase.new_id('ver_'), v.value, v.patch, v.label, v.reason,
           v.importance, v.metadata, v.step_key, v.created_by, v.created_at
      FROM tidebase.state_versions v
     WHERE v.run_id = p_source_id AND v.created_at <= cut.completed_at;
    INSERT INTO tidebase.run_edges (parent_run_id, name, id, child_run_id, edge_type, metadata)
    VALUES (p_source_id, 'fork:' || p_new_id, tidebase.new_id('edge_'), p_new_id, 'fork',
            jsonb_build_object('atStep', p_at_key));
    v_seq := tidebase.next_seq(p_new_id);
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_new_id, v_seq, 'run.created',
            jsonb_build_object('workflowName', r.workflow, 'input', r.input, 'forkedFrom', p_source_id,
                               'forkedAtStep', p_at_key));
    SELECT * INTO r FROM tidebase.runs WHERE id = p_new_id;
    RETURN NEXT r;
END
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Usage.

-- Records usage on a run of any status (usage is the cost of work that really happened) and appends usage.recorded.
CREATE FUNCTION tidebase.record_usage(
    p_run_id text, p_id text, p_step_key text, p_kind text, p_provider text, p_model text, p_label text,
    p_unit text, p_quantity double precision, p_input_tokens bigint, p_output_tokens bigint, p_total_tokens bigint,
    p_cost_usd numeric, p_metadata jsonb
) RETURNS SETOF tidebase.usage
LANGUAGE plpgsql AS $$
DECLARE
    u tidebase.usage%ROWTYPE;
    v_seq bigint := tidebase.next_seq(p_run_id);
BEGIN
    INSERT INTO tidebase.usage (run_id, id, step_key, kind, provider, model, label, unit, quantity, input_tokens,
                                output_tokens, total_tokens, cost_usd, metadata)
    VALUES (p_run_id, p_id, p_step_key, coalesce(p_kind, 'custom'), p_provider, p_model, p_label, p_unit, p_quantity,
            p_input_tokens, p_output_tokens,
            coalesce(p_total_tokens, CASE WHEN p_input_tokens IS NULL AND p_output_tokens IS NULL THEN NULL
                                          ELSE coalesce(p_input_tokens, 0) + coalesce(p_output_tokens, 0) END),
            p_cost_usd, coalesce(p_metadata, '{}'))
    RETURNING * INTO u;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq, 'usage.recorded', jsonb_build_object('usage', to_jsonb(u)));
    RETURN NEXT u;
END
$$;

-- Records, for a step served from its checkpoint, the usage its original execution recorded, as saved usage.
CREATE FUNCTION tidebase.record_saved_usage(p_run_id text, p_step_key text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
BEGIN
    INSERT INTO tidebase.usage (run_id, id, step_key, kind, provider, model, label, unit, quantity, input_tokens,
                                output_tokens, total_tokens, cost_usd, metadata, saved, saved_from)
    SELECT run_id, tidebase.new_id('use_'), step_key, kind, provider, model, label, unit, quantity, input_tokens,
           output_tokens, total_tokens, cost_usd, metadata, true, id
      FROM tidebase.usage
     WHERE run_id = p_run_id AND step_key = p_step_key AND NOT saved;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
