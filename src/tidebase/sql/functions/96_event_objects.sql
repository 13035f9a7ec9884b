-- Events carry the objects they report, as they were when the event was appended (docs/http-api.md#event-types): the
-- gate of gate events, the state version of state and snapshot events, the child run and edge of run.child.created, the
-- step id of a step's usage, the parent and edge name in a child's run.created. A BEFORE INSERT trigger adds them from
-- the rows the same transaction has just written, so no writer has to, and the HTTP layer only renders them. Secrets
-- never enter an event: a gate's channels keep only whether they have a secret, and a run's webhooks and recovery
-- secret are left out.

CREATE OR REPLACE FUNCTION tidebase.events_objects() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.type IN ('gate.created', 'gate.resolved') THEN
        NEW.payload := NEW.payload
                       || jsonb_build_object('gate', tidebase.gate_document(NEW.payload ->> 'gateId'));
    ELSIF NEW.type IN ('state.updated', 'state.saved', 'snapshot.created') THEN
        NEW.payload := NEW.payload || jsonb_build_object('stateVersion', (
            SELECT (to_jsonb(v) - 'value' - 'patch' - 'metadata') || jsonb_build_object('stream_id', s.id)
              FROM tidebase.state_versions v
              JOIN tidebase.state_streams s ON s.run_id = v.run_id AND s.name = v.stream
             WHERE v.run_id = NEW.run_id AND v.stream = NEW.payload ->> 'stream'
               AND v.version = (NEW.payload ->> 'version')::bigint));
    ELSIF NEW.type = 'run.child.created' THEN
        NEW.payload := NEW.payload || jsonb_build_object(
            'childRun', (SELECT to_jsonb(r) - 'webhooks' - 'recovery_secret' FROM tidebase.runs r
                          WHERE r.id = NEW.payload ->> 'childRunId'),
            'edgeRecord', (SELECT to_jsonb(e) FROM tidebase.run_edges e
                            WHERE e.parent_run_id = NEW.run_id AND e.name = NEW.payload ->> 'edge'));
    ELSIF NEW.type = 'run.created' THEN
        NEW.payload := NEW.payload || coalesce((
            SELECT jsonb_build_object('parentRunId', r.parent_id, 'edgeName', r.metadata ->> 'parentEdgeName')
              FROM tidebase.runs r WHERE r.id = NEW.run_id AND r.parent_id IS NOT NULL), '{}');
    ELSIF NEW.type = 'usage.recorded' AND NEW.payload #>> '{usage,step_key}' IS NOT NULL THEN
        NEW.payload := jsonb_set(NEW.payload, '{usage,step_id}', coalesce((
            SELECT to_jsonb(s.id) FROM tidebase.steps s
             WHERE s.run_id = NEW.run_id AND s.key = NEW.payload #>> '{usage,step_key}'), 'null'));
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER events_objects BEFORE INSERT ON tidebase.events
    FOR EACH ROW WHEN (NEW.type IN ('gate.created', 'gate.resolved', 'state.updated', 'state.saved',
                                    'snapshot.created', 'run.child.created', 'usage.recorded', 'run.created'))
    EXECUTE FUNCTION tidebase.events_objects();
