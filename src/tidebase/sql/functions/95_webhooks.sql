-- Webhooks: channels, the outbox they are delivered from, and its bookkeeping.
--
-- *Channels* belong to a run (runs.webhooks) or to a gate (gates.channels). Both doors pass channel specs ({url,
-- secret?, events?}) and tidebase.channel_entries stores them in one form: {id, kind, type, url, events, secret?},
-- where `events` is the filter as given and an empty one means every delivered type of docs/http-api.md#channels
-- (tidebase.delivered_types). A secret never leaves the outbox row it signs.
--
-- *Deliveries* are written by the transaction that appends the event they report, so a delivery exists if and only if
-- its event committed: the run's channels see every event of their run through a deferred trigger on the run row
-- (every event advances the run's counter; the trigger's WHEN clause keeps runs without channels at zero cost, and at
-- commit the events of the transaction's seq range are all inserted), except gate.created, which tidebase.begin_gate
-- queues itself because it alone knows the resolve token. A gate's own channels get gate.resolved from a trigger on
-- the gate. A delivery captures, at commit, the objects its event reports (delivery_source); the dispatcher renders
-- the public body from it once, before the first try, and sends those bytes on every try. The resolve token exists in
-- plain text only in the body of a gate.created delivery; listings read deliveries through tidebase.public_delivery.
--
-- The dispatcher claims due rows with SKIP LOCKED (claim_deliveries), and every try is recorded (record_delivery).
-- Recovery and invoke webhooks (kind `recovery`) are decided explicitly (91_recovery.sql, 90_queues_and_claims.sql).
--
-- The two constraint triggers are dropped and created again when this file is re-applied: Postgres has no CREATE OR
-- REPLACE for constraint triggers.

-- The event types a channel with an empty filter receives (docs/http-api.md#channels).
CREATE OR REPLACE FUNCTION tidebase.delivered_types() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT '["run.completed", "run.failed", "run.cancelled", "step.failed", "state.updated", "usage.recorded",
             "gate.created", "gate.resolved"]'::jsonb
$$;

-- The stored form of channel specs [{url, secret?, events?}] (an `id` given is kept, else one is made).
CREATE OR REPLACE FUNCTION tidebase.channel_entries(p_specs jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
               'id', coalesce(h ->> 'id', tidebase.new_id('chan_')), 'kind', 'channel', 'type', 'webhook',
               'url', h -> 'url',
               'events', CASE WHEN jsonb_typeof(h -> 'events') = 'array' THEN h -> 'events' ELSE '[]' END,
               'secret', to_jsonb(nullif(h ->> 'secret', ''))))
           ORDER BY n), '[]')
      FROM jsonb_array_elements(coalesce(p_specs, '[]')) WITH ORDINALITY AS e (h, n)
$$;

-- Channel entries as events show them: {type, url, events}, never a secret.
CREATE OR REPLACE FUNCTION tidebase.channel_list(p_entries jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('type', 'webhook', 'url', h -> 'url',
                                                 'events', coalesce(h -> 'events', '[]')) ORDER BY n), '[]')
      FROM jsonb_array_elements(coalesce(p_entries, '[]')) WITH ORDINALITY AS e (h, n)
$$;

-- What a channel delivery of event p_type reports, captured when the event commits: the event's payload (without a
-- resolve token) plus the run (run.* types), the step (step.failed) or the gate (gate.* types) as they are now,
-- without secrets.
CREATE OR REPLACE FUNCTION tidebase.delivery_source(p_run_id text, p_type text, p_payload jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('payload', p_payload - 'resolveToken')
           || CASE WHEN p_type IN ('run.completed', 'run.failed', 'run.cancelled') THEN jsonb_build_object('run', (
                       SELECT to_jsonb(r) - 'webhooks' - 'recovery_secret' FROM tidebase.runs r WHERE r.id = p_run_id))
                   WHEN p_type = 'step.failed' THEN jsonb_build_object('step', (
                       SELECT to_jsonb(s) FROM tidebase.steps s
                        WHERE s.run_id = p_run_id AND s.id = p_payload ->> 'stepId'))
                   WHEN p_type IN ('gate.created', 'gate.resolved') THEN
                       jsonb_build_object('gate', tidebase.gate_document(p_payload ->> 'gateId'))
                   ELSE '{}'::jsonb END
$$;

-- Queues the deliveries of event p_type of run p_run_id to the channels p_hooks whose filter matches the type (an
-- exact type, `*`, or a `prefix.*`; an empty filter: tidebase.delivered_types). A hook that is an entry of the run's
-- webhooks names that channel (channel_id); any other (a gate's own channel) names none. Body: {type, runId, gateId,
-- deliveryId, payload} with the event's payload as stored; the dispatcher replaces the payload with its public form,
-- rendered from `source`, before the first try. p_seq is the event's seq when the caller knows it.
CREATE OR REPLACE FUNCTION tidebase.queue_webhooks(
    p_run_id text, p_hooks jsonb, p_type text, p_payload jsonb, p_seq bigint DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    h jsonb;
    v_id text;
    v_source jsonb;
    v_run_hooks jsonb;
BEGIN
    IF p_hooks IS NULL OR jsonb_array_length(p_hooks) = 0 THEN
        RETURN;
    END IF;
    SELECT webhooks INTO v_run_hooks FROM tidebase.runs WHERE id = p_run_id;
    FOR h IN SELECT * FROM jsonb_array_elements(p_hooks) LOOP
        IF coalesce(h ->> 'kind', 'channel') = 'channel' AND EXISTS (
               SELECT 1 FROM jsonb_array_elements_text(coalesce(nullif(h -> 'events', '[]'),
                                                                tidebase.delivered_types())) f
                WHERE f = '*' OR f = p_type OR (f LIKE '%.*' AND p_type LIKE left(f, -1) || '%')) THEN
            v_source := coalesce(v_source, tidebase.delivery_source(p_run_id, p_type, p_payload));
            v_id := tidebase.new_id('del_');
            INSERT INTO tidebase.outbox (run_id, kind, event_type, url, secret, body, gate_id, public_id, source,
                                         event_seq, channel_id)
            VALUES (p_run_id, 'channel', p_type, h ->> 'url', h ->> 'secret',
                    jsonb_build_object('type', p_type, 'runId', p_run_id, 'gateId', p_payload ->> 'gateId',
                                       'deliveryId', v_id, 'payload', p_payload)::text,
                    p_payload ->> 'gateId', v_id, v_source, p_seq,
                    CASE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(v_run_hooks, '[]')) w WHERE w = h)
                         THEN h ->> 'id' END);
        END IF;
    END LOOP;
END
$$;

-- Hands the events (p_from, p_to] of run p_run_id, which has channels, to its channels: moves the run's webhook cursor
-- to p_to, which queues the deliveries of those events when the transaction commits (the trigger below). Called by
-- tidebase.next_seq under the run row lock, for runs with channels only: every other run never touches the cursors or
-- their triggers. A run's first call creates its cursor at p_from.
CREATE OR REPLACE FUNCTION tidebase.hand_to_channels(p_run_id text, p_from bigint, p_to bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tidebase.webhook_cursors SET event_seq = p_to WHERE run_id = p_run_id;
    IF NOT FOUND THEN
        INSERT INTO tidebase.webhook_cursors (run_id, from_seq, event_seq) VALUES (p_run_id, p_from, p_to);
    END IF;
END
$$;

-- The cursor's trigger: at commit, the deliveries of every event in the seq range (OLD.event_seq, NEW.event_seq] of
-- one move of a run's cursor (from from_seq for a new cursor), each with its seq.
CREATE OR REPLACE FUNCTION tidebase.log_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    e tidebase.events%ROWTYPE;
    v_from bigint := CASE WHEN TG_OP = 'INSERT' THEN NEW.from_seq ELSE OLD.event_seq END;
    v_hooks jsonb;
BEGIN
    SELECT webhooks INTO v_hooks FROM tidebase.runs WHERE id = NEW.run_id;
    FOR e IN SELECT * FROM tidebase.events
              WHERE run_id = NEW.run_id AND seq > v_from AND seq <= NEW.event_seq ORDER BY seq LOOP
        IF e.type <> 'gate.created' THEN  -- queued by begin_gate, which alone knows the resolve token
            PERFORM tidebase.queue_webhooks(NEW.run_id, v_hooks, e.type, e.payload, e.seq);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS log_webhooks_insert ON tidebase.webhook_cursors;
CREATE CONSTRAINT TRIGGER log_webhooks_insert AFTER INSERT ON tidebase.webhook_cursors DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION tidebase.log_webhooks();
DROP TRIGGER IF EXISTS log_webhooks_update ON tidebase.webhook_cursors;
CREATE CONSTRAINT TRIGGER log_webhooks_update AFTER UPDATE ON tidebase.webhook_cursors DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION tidebase.log_webhooks();

-- The resolve token in a delivery body: a gate.created body carries it under payload.gate once rendered, and under
-- payload before; null for every other body.
CREATE OR REPLACE FUNCTION tidebase.body_token(p_body text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(b #>> '{payload,gate,resolveToken}', b #>> '{payload,resolveToken}')
      FROM (SELECT p_body::jsonb AS b) d
$$;

-- p_text with the resolve token of delivery body p_body replaced by `[redacted]`: for what a receiver answered and
-- for error texts, which may echo what was sent.
CREATE OR REPLACE FUNCTION tidebase.redact_delivery(p_text text, p_body text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT replace(p_text, coalesce(tidebase.body_token(p_body), ''), '[redacted]')
$$;

-- What may be shown of delivery or webhook o: every column but its secret (`has_secret` says whether it has one),
-- its body and the source the body is rendered from. `message` is the body as a document, with the resolve token
-- null; the receiver's answer and the error text are redacted by tidebase.redact_delivery.
CREATE OR REPLACE FUNCTION tidebase.public_delivery(o tidebase.outbox)
RETURNS TABLE (
    id bigint, public_id text, run_id text, kind text, event_type text, url text, channel_id text, gate_id text,
    event_seq bigint, reason text, auto boolean, has_secret boolean, message jsonb, status text, attempts integer,
    max_attempts integer, next_attempt_at timestamptz, http_status integer, response_body text, last_error text,
    created_at timestamptz, delivered_at timestamptz, completed_at timestamptz
)
LANGUAGE sql STABLE AS $$
    SELECT o.id, o.public_id, o.run_id, o.kind, o.event_type, o.url, o.channel_id, o.gate_id, o.event_seq, o.reason,
           o.auto, o.secret IS NOT NULL,
           jsonb_set(jsonb_set(o.body::jsonb, '{payload,resolveToken}', 'null', false),
                     '{payload,gate,resolveToken}', 'null', false),
           o.status, o.attempts, o.max_attempts, o.next_attempt_at, o.http_status,
           tidebase.redact_delivery(o.response_body, o.body), tidebase.redact_delivery(o.last_error, o.body),
           o.created_at, o.delivered_at, o.completed_at
$$;

-- Closes outbox row o as failed with p_error, appending recovery.failed for a recovery or invoke webhook.
CREATE OR REPLACE FUNCTION tidebase.close_delivery(o tidebase.outbox, p_status integer, p_error text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tidebase.outbox
       SET status = 'dead', last_error = p_error, http_status = coalesce(p_status, http_status),
           completed_at = tidebase.now()
     WHERE id = o.id;
    IF o.kind = 'recovery' AND o.run_id IS NOT NULL THEN
        PERFORM tidebase.log_event(o.run_id, 'recovery.failed',
                                   jsonb_strip_nulls(jsonb_build_object('recoveryAttemptId', o.public_id,
                                                                        'httpStatus', p_status,
                                                                        'error', CASE WHEN p_status IS NULL
                                                                                      THEN p_error END)));
    END IF;
END
$$;

-- Claims up to p_limit due deliveries for one dispatcher: each is pushed p_hold_ms into the future first (a dispatcher
-- that dies mid-delivery leaves it to be retried, and no other takes it meanwhile). A first try waits until every
-- earlier delivery of the run to the same URL has had its first try (docs/http-api.md#delivery). A recovery webhook
-- whose run is completed, cancelled or running under a live lease, and an invoke webhook whose run is no longer queued,
-- is closed as superseded instead of being returned.
CREATE OR REPLACE FUNCTION tidebase.claim_deliveries(p_limit integer, p_hold_ms integer) RETURNS SETOF tidebase.outbox
LANGUAGE plpgsql AS $$
DECLARE
    o tidebase.outbox%ROWTYPE;
    r tidebase.runs%ROWTYPE;
BEGIN
    FOR o IN SELECT * FROM tidebase.outbox
              WHERE status = 'pending' AND next_attempt_at <= tidebase.now()
              ORDER BY next_attempt_at, id
              LIMIT p_limit
                FOR UPDATE SKIP LOCKED LOOP
        -- first tries go out in event order per (run, URL): not before every earlier one has had its first try
        IF o.attempts = 0 AND o.run_id IS NOT NULL AND EXISTS (
               SELECT 1 FROM tidebase.outbox p
                WHERE p.run_id = o.run_id AND p.id < o.id AND p.url = o.url AND p.status = 'pending'
                  AND NOT EXISTS (SELECT 1 FROM tidebase.outbox_attempts a WHERE a.outbox_id = p.id)) THEN
            CONTINUE;
        END IF;
        IF o.kind = 'recovery' THEN
            SELECT * INTO r FROM tidebase.runs WHERE id = o.run_id;
            IF (o.event_type = 'run.resume'
                AND (r.status IN ('completed', 'cancelled')
                     OR (r.status = 'running' AND r.lease_expires_at > tidebase.now())))
               OR (o.event_type = 'run.invoke' AND r.status <> 'queued') THEN
                PERFORM tidebase.close_delivery(o, NULL, 'superseded: run is ' || r.status);
                CONTINUE;
            END IF;
        END IF;
        UPDATE tidebase.outbox
           SET next_attempt_at = tidebase.now() + p_hold_ms * interval '1 millisecond', attempts = attempts + 1
         WHERE id = o.id
        RETURNING * INTO o;
        RETURN NEXT o;
    END LOOP;
END
$$;

-- Records one try and its outcome: delivered on 2xx; otherwise retried after p_retry_ms when p_retry and tries are
-- left (the row's max_attempts, lowered to the dispatcher's p_max_attempts when given), else failed for good. A final
-- outcome of a recovery or invoke webhook appends recovery.delivered/failed. The receiver's answer and the error text
-- are kept without the delivery's resolve token (a receiver may echo what it was sent).
CREATE OR REPLACE FUNCTION tidebase.record_delivery(
    p_id bigint, p_attempt integer, p_started_at timestamptz, p_duration_ms integer, p_status_code integer,
    p_error text, p_ok boolean, p_retry boolean, p_retry_ms integer, p_response text, p_max_attempts integer
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    o tidebase.outbox%ROWTYPE;
BEGIN
    SELECT * INTO o FROM tidebase.outbox WHERE id = p_id;
    p_error := tidebase.redact_delivery(p_error, o.body);
    p_response := tidebase.redact_delivery(p_response, o.body);
    INSERT INTO tidebase.outbox_attempts (outbox_id, attempt, started_at, duration_ms, status_code, error, ok)
    VALUES (p_id, p_attempt, p_started_at, p_duration_ms, p_status_code, p_error, p_ok)
    ON CONFLICT DO NOTHING;
    UPDATE tidebase.outbox
       SET http_status = p_status_code, response_body = left(p_response, 8000),
           last_error = CASE WHEN p_ok THEN NULL ELSE p_error END
     WHERE id = p_id AND status = 'pending'
    RETURNING * INTO o;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF p_ok THEN
        UPDATE tidebase.outbox SET status = 'delivered', delivered_at = tidebase.now(), completed_at = tidebase.now()
         WHERE id = p_id;
        IF o.kind = 'recovery' AND o.run_id IS NOT NULL THEN
            PERFORM tidebase.log_event(o.run_id, 'recovery.delivered',
                                       jsonb_build_object('recoveryAttemptId', o.public_id,
                                                          'httpStatus', p_status_code));
        END IF;
    ELSIF p_retry AND o.attempts < least(o.max_attempts, coalesce(p_max_attempts, o.max_attempts)) THEN
        UPDATE tidebase.outbox SET next_attempt_at = tidebase.now() + p_retry_ms * interval '1 millisecond'
         WHERE id = p_id;
    ELSE
        PERFORM tidebase.close_delivery(o, p_status_code, p_error);
    END IF;
END
$$;
