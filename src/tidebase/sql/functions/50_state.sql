-- Live state (I7): named streams per run, each write a new gap-free version, with its event, in one transaction.
--
-- Both doors write through tidebase.write_state: the library with its fencing token, the HTTP routes without one (an
-- unfenced writer, refused only by a terminal run, docs/http-api.md#fencing). The fence takes the run row first; the
-- stream row is then locked, so concurrent writers of one stream serialize and versions stay gap-free (version = the
-- stream's counter + 1, under its lock).

-- Writes a state stream: p_mode 'set' replaces the value, 'patch' merges (jsonb ||), 'save' labels the current value
-- without changing it (TB010 when the stream has no version yet), 'snapshot' sets a labelled milestone value in a
-- stream about a target (p_target_type, p_target_id). Appends the next gap-free version and one event
-- (state.updated, state.saved or snapshot.created) in the same transaction, and returns the version row.
CREATE OR REPLACE FUNCTION tidebase.write_state(
    p_run_id text, p_token bigint, p_stream text, p_mode text, p_value jsonb, p_label text, p_reason text,
    p_importance text, p_metadata jsonb, p_created_by text, p_step_key text, p_target_type text, p_target_id text
) RETURNS SETOF tidebase.state_versions
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint := tidebase.fence(p_run_id, p_token, 1);
    st tidebase.state_streams%ROWTYPE;
    v tidebase.state_versions%ROWTYPE;
    v_value jsonb;
BEGIN
    SELECT * INTO st FROM tidebase.state_streams WHERE run_id = p_run_id AND name = p_stream FOR UPDATE;
    IF NOT FOUND THEN
        IF p_mode = 'save' THEN
            RAISE EXCEPTION 'run % has no state in stream %', p_run_id, p_stream USING ERRCODE = 'TB010';
        END IF;
        INSERT INTO tidebase.state_streams (run_id, name, id, target_type, target_id)
        VALUES (p_run_id, p_stream, tidebase.new_id('stream_'), coalesce(p_target_type, 'run'),
                coalesce(p_target_id, p_run_id))
        RETURNING * INTO st;
    ELSIF p_mode = 'save' AND st.current_version = 0 THEN
        RAISE EXCEPTION 'run % has no state in stream %', p_run_id, p_stream USING ERRCODE = 'TB010';
    END IF;
    v_value := CASE p_mode
                   WHEN 'patch' THEN CASE WHEN st.current_version = 0 THEN p_value
                                          ELSE st.current_value || p_value END
                   WHEN 'save' THEN st.current_value
                   ELSE p_value END;
    UPDATE tidebase.state_streams
       SET current_version = current_version + 1, current_value = v_value, updated_at = tidebase.now()
     WHERE run_id = p_run_id AND name = p_stream
    RETURNING * INTO st;
    INSERT INTO tidebase.state_versions (run_id, stream, version, id, value, patch, label, reason, importance,
                                         metadata, step_key, created_by)
    VALUES (p_run_id, p_stream, st.current_version, tidebase.new_id('ver_'), v_value,
            CASE WHEN p_mode = 'patch' THEN p_value END, p_label, p_reason,
            coalesce(p_importance, CASE WHEN p_mode IN ('save', 'snapshot') THEN 'milestone' ELSE 'normal' END),
            coalesce(p_metadata, '{}'), p_step_key, p_created_by)
    RETURNING * INTO v;
    INSERT INTO tidebase.events (run_id, seq, type, payload)
    VALUES (p_run_id, v_seq,
            CASE p_mode WHEN 'save' THEN 'state.saved' WHEN 'snapshot' THEN 'snapshot.created'
                        ELSE 'state.updated' END,
            jsonb_build_object('stream', p_stream, 'version', v.version, 'versionId', v.id, 'label', v.label)
            || CASE WHEN p_mode IN ('set', 'patch') THEN jsonb_build_object('value', v_value) ELSE '{}'::jsonb END
            || CASE WHEN p_mode = 'patch' THEN jsonb_build_object('patch', p_value) ELSE '{}'::jsonb END);
    RETURN NEXT v;
END
$$;
