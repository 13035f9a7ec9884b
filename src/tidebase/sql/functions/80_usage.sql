-- Usage: what a run spent (tokens, cost), with its step when known, and what a replay saved.
--
-- Usage is accepted on a run of any status, terminal ones included (it records work that really happened), so its
-- event takes its seq from tidebase.next_seq without the fence.

-- Records usage on a run of any status (usage is the cost of work that really happened) and appends usage.recorded.
CREATE OR REPLACE FUNCTION tidebase.record_usage(
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

-- Copies the original usage of a step replayed from its checkpoint as saved usage of p_run_id: the run's own
-- records, or, for a step a fork copied, those of the run that executed it.
CREATE OR REPLACE FUNCTION tidebase.record_saved_usage(p_run_id text, p_step_key text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_from text;
    v_count integer;
BEGIN
    SELECT coalesce(usage_from, run_id) INTO v_from FROM tidebase.steps WHERE run_id = p_run_id AND key = p_step_key;
    INSERT INTO tidebase.usage (run_id, id, step_key, kind, provider, model, label, unit, quantity, input_tokens,
                                output_tokens, total_tokens, cost_usd, metadata, saved, saved_from)
    SELECT p_run_id, tidebase.new_id('use_'), step_key, kind, provider, model, label, unit, quantity, input_tokens,
           output_tokens, total_tokens, cost_usd, metadata, true, id
      FROM tidebase.usage
     WHERE run_id = coalesce(v_from, p_run_id) AND step_key = p_step_key AND NOT saved;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
