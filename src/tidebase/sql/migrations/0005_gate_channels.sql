-- Tidebase schema, version 5: gate channels, and the resolve token's only destination besides the gate's creator.
--
-- A gate may carry webhook channels of its own ({url, secret?, events?}, stored in gates.channels; secrets are never
-- returned). The gate.created delivery to those channels and to the run's matching webhooks is the one place, other
-- than the answer to the call that created the gate, that carries the resolve token: approvers outside the system
-- receive it there. The token exists in plain text only in that outbox row's body (a delivery body must be
-- byte-identical on every retry); the gates table keeps only its SHA-256. The run trigger of 0004 therefore leaves
-- gate.created to tidebase.begin_gate_v2, and gate.resolved also reaches the gate's own channels (without the token).

CREATE OR REPLACE FUNCTION tidebase.runs_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    e tidebase.events%ROWTYPE;
    v_from bigint := CASE WHEN TG_OP = 'INSERT' THEN 0 ELSE OLD.event_seq END;
BEGIN
    FOR e IN SELECT * FROM tidebase.events
              WHERE run_id = NEW.id AND seq > v_from AND seq <= NEW.event_seq ORDER BY seq LOOP
        IF e.type <> 'gate.created' THEN  -- queued by begin_gate_v2, which alone knows the resolve token
            PERFORM tidebase.queue_webhooks(NEW.id, NEW.webhooks, e.type, e.payload);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- Opens the gate like tidebase.begin_gate and, when this call created it, queues its gate.created deliveries (the
-- run's webhooks and the gate's channels whose filters match), carrying the resolve token.
CREATE FUNCTION tidebase.begin_gate_v2(
    p_run_id text, p_token bigint, p_name text, p_id text, p_prompt text, p_data jsonb, p_token_hash text,
    p_capability jsonb, p_channels jsonb, p_resolve_token text, OUT gate tidebase.gates, OUT created boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    b record;
BEGIN
    SELECT * INTO b
      FROM tidebase.begin_gate(p_run_id, p_token, p_name, p_id, p_prompt, p_data, p_token_hash, p_capability,
                               p_channels);
    gate := b.gate;
    created := b.created;
    IF created THEN
        PERFORM tidebase.queue_webhooks(
            p_run_id, (SELECT webhooks FROM tidebase.runs WHERE id = p_run_id) || gate.channels, 'gate.created',
            jsonb_build_object('gateId', gate.id, 'name', gate.name, 'prompt', gate.prompt, 'data', gate.data,
                               'resolveToken', p_resolve_token));
    END IF;
END
$$;

-- Delivers gate.resolved to the gate's own channels (the run's webhooks get it through the run trigger).
CREATE FUNCTION tidebase.gates_resolved_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tidebase.queue_webhooks(NEW.run_id, NEW.channels, 'gate.resolved',
                                    jsonb_build_object('gateId', NEW.id, 'name', NEW.name, 'decision', NEW.decision,
                                                       'actor', NEW.actor, 'payload', NEW.payload));
    RETURN NULL;
END
$$;
CREATE TRIGGER gates_resolved_webhooks AFTER UPDATE OF status ON tidebase.gates
    FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending' AND NEW.channels <> '[]'::jsonb)
    EXECUTE FUNCTION tidebase.gates_resolved_webhooks();
