-- Gates (I5): human decisions inside a run, one per (run, name), created once and resolved exactly once.
--
-- A gate's resolve token is never stored: only its SHA-256 (compared by the caller in constant time). The token
-- exists in plain text in the answer to the call that created the gate and in that gate's gate.created webhook
-- deliveries (to the run's channels and the gate's own), for approvers outside the system; see 95_webhooks.sql.

-- Opens the gate (run, name), or returns the existing one unchanged; `created` says which. Fenced by the holder's
-- token (the library) or unfenced (p_token NULL: the HTTP route; terminal runs refuse). A creation appends
-- gate.created and queues its deliveries, which carry p_resolve_token.
CREATE OR REPLACE FUNCTION tidebase.begin_gate(
    p_run_id text, p_token bigint, p_name text, p_id text, p_prompt text, p_data jsonb, p_token_hash text,
    p_capability jsonb, p_channels jsonb, p_resolve_token text, OUT gate tidebase.gates, OUT created boolean
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tidebase.fence(p_run_id, p_token, 0);
    SELECT * INTO gate FROM tidebase.gates WHERE run_id = p_run_id AND name = p_name;
    IF FOUND THEN
        created := false;
        RETURN;
    END IF;
    INSERT INTO tidebase.gates (run_id, name, id, prompt, data, token_hash, capability, channels)
    VALUES (p_run_id, p_name, p_id, coalesce(p_prompt, ''), coalesce(p_data, '{}'), p_token_hash, p_capability,
            tidebase.channel_entries(p_channels))
    RETURNING * INTO gate;
    PERFORM tidebase.log_event(p_run_id, 'gate.created',
        jsonb_build_object('gateId', gate.id, 'name', gate.name, 'prompt', gate.prompt, 'data', gate.data));
    PERFORM tidebase.queue_webhooks(
        p_run_id, (SELECT webhooks FROM tidebase.runs WHERE id = p_run_id) || gate.channels, 'gate.created',
        jsonb_build_object('gateId', gate.id, 'name', gate.name, 'prompt', gate.prompt, 'data', gate.data,
                           'resolveToken', p_resolve_token));
    created := true;
END
$$;

-- Resolves a pending gate exactly once. A gate that already has a decision raises TB012 (DETAIL the decision, HINT
-- the actor), whatever its run did since; a pending gate of a completed or cancelled run is refused by the fence
-- (TB007 / TB004). A queued run that was suspended at its gates and has none pending any more goes back to its queue,
-- so a worker resumes it; a run invoked directly is resumed by invoking it again.
CREATE OR REPLACE FUNCTION tidebase.resolve_gate(
    p_gate_id text, p_decision text, p_actor text, p_payload jsonb
) RETURNS SETOF tidebase.gates
LANGUAGE plpgsql AS $$
DECLARE
    v_run_id text;
    g tidebase.gates%ROWTYPE;
    r tidebase.runs%ROWTYPE;
    v_seq bigint;
BEGIN
    SELECT run_id INTO v_run_id FROM tidebase.gates WHERE id = p_gate_id;
    -- The run row first (the lock order), whatever the run's status: queued here, a loser of a race reads the gate
    -- only once the winner committed. No row is locked for an unknown gate.
    SELECT * INTO r FROM tidebase.runs WHERE id = v_run_id FOR NO KEY UPDATE;
    SELECT * INTO g FROM tidebase.gates WHERE id = p_gate_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gate % not found', p_gate_id USING ERRCODE = 'TB011';
    ELSIF g.status <> 'pending' AND r.status = 'cancelled' AND g.decision = 'canceled'
          AND g.resolved_at >= r.cancelled_at THEN
        RAISE EXCEPTION 'gate % was canceled with its run % (cancelled)', p_gate_id, g.run_id
            USING ERRCODE = 'TB012', DETAIL = g.decision, HINT = coalesce(g.actor, '');
    ELSIF g.status <> 'pending' THEN
        RAISE EXCEPTION 'gate % is already resolved (% by %)', p_gate_id, g.decision, coalesce(g.actor, 'an operator')
            USING ERRCODE = 'TB012', DETAIL = g.decision, HINT = coalesce(g.actor, '');
    END IF;
    v_seq := tidebase.fence(g.run_id, NULL, 1);
    UPDATE tidebase.gates
       SET status = p_decision, decision = p_decision, actor = p_actor, payload = coalesce(p_payload, '{}'),
           resolved_at = tidebase.now(), updated_at = tidebase.now()
     WHERE id = p_gate_id
    RETURNING * INTO g;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (g.run_id, v_seq, 'gate.resolved',
            jsonb_build_object('gateId', g.id, 'name', g.name, 'decision', g.decision, 'actor', g.actor,
                               'payload', g.payload));
    PERFORM pg_notify('tidebase_gates', g.id);
    UPDATE tidebase.runs SET status = 'queued', available_at = tidebase.now(), updated_at = tidebase.now()
     WHERE id = g.run_id AND status = 'waiting' AND queue IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM tidebase.gates WHERE run_id = g.run_id AND status = 'pending');
    IF FOUND THEN
        PERFORM pg_notify('tidebase_queues', (SELECT queue FROM tidebase.runs WHERE id = g.run_id));
    END IF;
    RETURN NEXT g;
END
$$;

-- The gate row as a document without secrets: no token hash, and its channels say only whether they have one.
CREATE OR REPLACE FUNCTION tidebase.gate_document(p_gate_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT (to_jsonb(g) - 'token_hash' - 'channels')
           || jsonb_build_object('channels', coalesce((
                  SELECT jsonb_agg((c - 'secret') || jsonb_build_object('hasSecret', c ? 'secret'))
                    FROM jsonb_array_elements(g.channels) c), '[]'))
      FROM tidebase.gates g WHERE g.id = p_gate_id
$$;

-- Delivers gate.resolved to the gate's own channels (the run's channels get it through the run trigger, see
-- 95_webhooks.sql).
CREATE OR REPLACE FUNCTION tidebase.gates_resolved_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tidebase.queue_webhooks(NEW.run_id, NEW.channels, 'gate.resolved',
                                    jsonb_build_object('gateId', NEW.id, 'name', NEW.name, 'decision', NEW.decision,
                                                       'actor', NEW.actor, 'payload', NEW.payload));
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER gates_resolved_webhooks AFTER UPDATE OF status ON tidebase.gates
    FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending' AND NEW.channels <> '[]'::jsonb)
    EXECUTE FUNCTION tidebase.gates_resolved_webhooks();
