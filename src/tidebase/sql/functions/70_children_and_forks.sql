-- Children (I6) and forks: a child run is created once per (parent, edge name); a fork is a new run that starts from
-- another's checkpoints.

-- Creates the child run of (parent, edge name) once, or returns the existing one (created = false). Fenced by the
-- parent's token (the library) or unfenced (p_token NULL: the HTTP route; a terminal parent refuses). The parent's
-- row lock serializes racing creators. An existing edge whose child has another workflow or input raises TB013 (DETAIL
-- the child's id). A new child carries p_metadata with `parentRunId` and `parentEdgeName` (which win), its channels
-- and recovery webhook; its run.created is appended on the child, then run.child.created on the parent.
CREATE OR REPLACE FUNCTION tidebase.create_child(
    p_parent_id text, p_token bigint, p_edge_name text, p_edge_type text, p_edge_metadata jsonb,
    p_child_id text, p_workflow text, p_input jsonb, p_input_hash text, p_lease_ms integer,
    p_metadata jsonb DEFAULT NULL, p_channels jsonb DEFAULT NULL, p_recovery_webhook text DEFAULT NULL,
    OUT child tidebase.runs, OUT edge tidebase.run_edges, OUT created boolean
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tidebase.fence(p_parent_id, p_token, 0);
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
    SELECT (c.run).* INTO child
      FROM tidebase.create_run(p_child_id, p_workflow, p_input, p_input_hash, true,
                               coalesce(p_metadata, '{}')
                               || jsonb_build_object('parentRunId', p_parent_id, 'parentEdgeName', p_edge_name),
                               p_parent_id, p_lease_ms, p_channels, p_recovery_webhook) AS c;
    INSERT INTO tidebase.run_edges (parent_run_id, name, id, child_run_id, edge_type, metadata)
    VALUES (p_parent_id, p_edge_name, tidebase.new_id('edge_'), child.id, coalesce(p_edge_type, 'child'),
            coalesce(p_edge_metadata, '{}'))
    RETURNING * INTO edge;
    PERFORM tidebase.log_event(p_parent_id, 'run.child.created',
        jsonb_build_object('childRunId', child.id, 'edge', p_edge_name, 'edgeType', edge.edge_type,
                           'workflowName', p_workflow));
    created := true;
END
$$;

-- Creates run p_new_id from run p_source_id: the source's completed checkpoints up to and including step p_at_key
-- (by completion order), its resolved gates, its state versions up to that point, the edges of its children that
-- had completed by then (the same child runs, so the fork replays their results), and an edge of type `fork`.
-- The source run and its children are not modified.
CREATE OR REPLACE FUNCTION tidebase.fork_run(
    p_source_id text, p_at_key text, p_new_id text, p_input jsonb, p_input_hash text
) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
DECLARE
    src tidebase.runs%ROWTYPE;
    cut tidebase.steps%ROWTYPE;
    r tidebase.runs%ROWTYPE;
    v_seq bigint;
BEGIN
    -- KEY SHARE: a retention batch deleting the source finishes first (then: TB001 below), or waits for the fork
    SELECT * INTO src FROM tidebase.runs WHERE id = p_source_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_source_id USING ERRCODE = 'TB001';
    END IF;
    SELECT * INTO cut FROM tidebase.steps WHERE run_id = p_source_id AND key = p_at_key AND status = 'completed';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % has no completed step %', p_source_id, p_at_key USING ERRCODE = 'TB008';
    END IF;
    INSERT INTO tidebase.runs (id, workflow, input, input_hash, metadata, lease_ms)
    VALUES (p_new_id, src.workflow, coalesce(p_input, src.input), coalesce(p_input_hash, src.input_hash),
            jsonb_build_object('forkedFrom', p_source_id, 'forkedAtStep', p_at_key), src.lease_ms)
    RETURNING * INTO r;
    INSERT INTO tidebase.steps (run_id, key, id, name, occurrence, input_hash, contract, status, output, attempt,
                                started_at, completed_at, created_at, updated_at, usage_from)
    SELECT p_new_id, key, tidebase.new_id('step_'), name, occurrence, input_hash, contract, 'completed', output,
           attempt, started_at, completed_at, created_at, updated_at, coalesce(usage_from, p_source_id)
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
    -- A child's result is part of the fork's past once the child completed by the fork point (a sequential parent
    -- gets it before the step that follows). Edges of a fork's inherited children are copied on, so a fork of a fork
    -- replays them too.
    INSERT INTO tidebase.run_edges (parent_run_id, name, id, child_run_id, edge_type, metadata, created_at)
    SELECT p_new_id, e.name, tidebase.new_id('edge_'), e.child_run_id, e.edge_type, e.metadata, e.created_at
      FROM tidebase.run_edges e
      JOIN tidebase.runs c ON c.id = e.child_run_id
     WHERE e.parent_run_id = p_source_id AND e.edge_type <> 'fork'
       AND c.status = 'completed' AND c.completed_at <= cut.completed_at;
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
