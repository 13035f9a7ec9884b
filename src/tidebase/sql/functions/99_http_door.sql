-- The HTTP door (`tidebase serve`, docs/http-api.md): what turns an HTTP call into a call of the shared functions.
--
-- HTTP clients name their lease by owner (the `leaseOwner` begin gave them), the library by fencing token. The door
-- resolves the owner into a token once, with tidebase.token_of, and then calls the same functions as the library
-- (create_run, acquire_run, renew_lease, begin_step, complete_step, fail_step, write_state, begin_gate,
-- resolve_gate, create_child, complete_run, fail_run, cancel_run), so a run begun through either door is fenced the
-- same way and either door can resume what the other began. Nothing here decides a transition: the functions below
-- only resolve HTTP's names (owners, step ids) and apply the refusals that the wire contract ranks before the shared
-- function's own (404s, a safe retry of a completed step, the overdue-deadline check), each under the run row lock.

-- The fencing token an HTTP caller writes under (docs/http-api.md#fencing): the run's current token when p_owner holds
-- the run (it is the lease owner of the running run, expired or not), or when p_owner is null and p_anyone (the
-- compatibility path of run complete and fail: the caller cannot be told apart from the holder), or when the run is
-- terminal (the fence then refuses by status, which the wire ranks before lease_lost); otherwise -1, a token no lease
-- has, which the fence refuses as lease lost. TB001 for an unknown run. The fence re-checks the token under the row
-- lock.
CREATE OR REPLACE FUNCTION tidebase.token_of(p_run_id text, p_owner text, p_anyone boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r record;
BEGIN
    SELECT status, lease_owner, fencing_token INTO r FROM tidebase.runs WHERE id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    ELSIF r.status IN ('cancelled', 'completed')
          OR (r.status = 'running' AND (r.lease_owner = p_owner OR (p_owner IS NULL AND p_anyone))) THEN
        RETURN r.fencing_token;
    END IF;
    RETURN -1;
END
$$;

-- begin (docs/http-api.md#begin): the overdue-deadline check, then tidebase.acquire_run. An overdue run is cancelled
-- and returned as it now is (the cancellation commits; the caller refuses it), not raised, which would roll it back.
CREATE OR REPLACE FUNCTION tidebase.http_begin(p_id text, p_owner text, p_lease_ms integer) RETURNS SETOF tidebase.runs
LANGUAGE plpgsql AS $$
BEGIN
    IF tidebase.cancel_if_overdue(p_id) THEN
        RETURN QUERY SELECT * FROM tidebase.runs WHERE id = p_id;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM tidebase.acquire_run(p_id, p_owner, p_lease_ms, NULL, NULL);
END
$$;

-- steps/begin (docs/http-api.md#steps-begin, #step-decision-order): the overdue-deadline check, then
-- tidebase.begin_step for the owner's token, then the holder's live lease renewed (tidebase.prolong). A step begun
-- over HTTP has key = its name (occurrence 1), the library's key of a step's first occurrence.
CREATE OR REPLACE FUNCTION tidebase.http_begin_step(
    p_run_id text, p_owner text, p_name text, p_input_hash text, p_input jsonb, p_options jsonb, p_contract jsonb
) RETURNS TABLE (action text, step tidebase.steps)
LANGUAGE plpgsql AS $$
DECLARE
    v_token bigint;
BEGIN
    PERFORM tidebase.cancel_if_overdue(p_run_id);
    v_token := tidebase.token_of(p_run_id, p_owner);
    RETURN QUERY SELECT * FROM tidebase.begin_step(p_run_id, v_token, p_name, p_name, 1, p_input_hash, p_input,
                                                   p_options, p_contract);
    PERFORM tidebase.prolong(p_run_id, v_token);
END
$$;

-- The refusals of a step write by id that the wire ranks first (docs/http-api.md#step-complete, #step-fail), under the
-- run row lock: TB001 unknown run, TB008 unknown step (or another run's), TB004 cancelled run; a completed step is
-- returned when p_completing with the same output (a safe retry: `token` is then null), else TB014. Returns the step
-- and the caller's token.
CREATE OR REPLACE FUNCTION tidebase.http_step_write(
    p_run_id text, p_step_id text, p_owner text, p_output jsonb, p_completing boolean,
    OUT token bigint, OUT step tidebase.steps
)
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    END IF;
    SELECT * INTO step FROM tidebase.steps WHERE run_id = p_run_id AND id = p_step_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step % of run % not found', p_step_id, p_run_id USING ERRCODE = 'TB008';
    ELSIF r.status = 'cancelled' THEN
        RAISE EXCEPTION 'run % is cancelled', p_run_id USING ERRCODE = 'TB004', DETAIL = coalesce(r.cancel_reason, '');
    ELSIF step.status = 'completed' THEN
        IF p_completing AND step.output IS NOT DISTINCT FROM p_output THEN
            RETURN;
        END IF;
        RAISE EXCEPTION 'step % of run % is already completed', p_step_id, p_run_id USING ERRCODE = 'TB014';
    END IF;
    token := tidebase.token_of(p_run_id, p_owner);
END
$$;

-- steps/:id/complete (docs/http-api.md#step-complete): tidebase.complete_step of the step the owner began, then the
-- holder's live lease renewed; the same output again is a no-op.
CREATE OR REPLACE FUNCTION tidebase.http_complete_step(p_run_id text, p_step_id text, p_owner text, p_output jsonb)
RETURNS SETOF tidebase.steps
LANGUAGE plpgsql AS $$
DECLARE
    w record;
    s tidebase.steps%ROWTYPE;
BEGIN
    SELECT * INTO w FROM tidebase.http_step_write(p_run_id, p_step_id, p_owner, p_output, true);
    s := w.step;
    IF s.status <> 'completed' THEN
        PERFORM tidebase.complete_step(p_run_id, w.token, s.key, s.id, s.name, s.occurrence, s.input_hash,
                                       s.contract, p_output, s.attempt, true);
        PERFORM tidebase.prolong(p_run_id, w.token);
    END IF;
    RETURN QUERY SELECT * FROM tidebase.steps WHERE run_id = p_run_id AND id = p_step_id;
END
$$;

-- steps/:id/fail (docs/http-api.md#step-fail): tidebase.fail_step of the step the owner began (attempt unchanged),
-- classified there, then the holder's live lease renewed.
CREATE OR REPLACE FUNCTION tidebase.http_fail_step(
    p_run_id text, p_step_id text, p_owner text, p_error jsonb, p_retryable boolean, p_decision text
) RETURNS SETOF tidebase.steps
LANGUAGE plpgsql AS $$
DECLARE
    w record;
    s tidebase.steps%ROWTYPE;
BEGIN
    SELECT * INTO w FROM tidebase.http_step_write(p_run_id, p_step_id, p_owner, NULL, false);
    s := w.step;
    RETURN QUERY SELECT * FROM tidebase.fail_step(p_run_id, w.token, s.key, s.name, s.occurrence, s.input_hash,
                                                  s.contract, s.attempt, p_retryable, p_decision, p_error, true);
    PERFORM tidebase.prolong(p_run_id, w.token);
END
$$;

-- steps/:id/review (docs/http-api.md#step-review): the step by id, then tidebase.review_step (retry: release, complete:
-- skip). TB001, TB004, TB007 from the fence (terminal runs refuse), TB008 unknown step, TB015 a step not in
-- manual_review.
CREATE OR REPLACE FUNCTION tidebase.http_review_step(
    p_run_id text, p_step_id text, p_action text, p_output jsonb, p_actor text, p_reason text
) RETURNS SETOF tidebase.steps
LANGUAGE plpgsql AS $$
DECLARE
    s tidebase.steps%ROWTYPE;
BEGIN
    PERFORM tidebase.fence(p_run_id, NULL, 0);
    SELECT * INTO s FROM tidebase.steps WHERE run_id = p_run_id AND id = p_step_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step % of run % not found', p_step_id, p_run_id USING ERRCODE = 'TB008';
    ELSIF s.status <> 'manual_review' THEN
        RAISE EXCEPTION 'step % of run % is not in manual review', p_step_id, p_run_id USING ERRCODE = 'TB015';
    END IF;
    PERFORM tidebase.review_step(p_run_id, s.key, CASE p_action WHEN 'complete' THEN 'skip' ELSE 'release' END,
                                 p_output, p_actor, p_reason);
    RETURN QUERY SELECT * FROM tidebase.steps WHERE run_id = p_run_id AND id = p_step_id;
END
$$;

-- gates/:id/resolve (docs/http-api.md#gate-resolve), before tidebase.resolve_gate: TB001 unknown run, TB011 unknown
-- gate (or another run's), the fence's refusal for a pending gate of a terminal run (a decided gate is left to
-- resolve_gate, which answers TB012). Returns the gate row, with its token hash for the caller's constant-time
-- comparison.
CREATE OR REPLACE FUNCTION tidebase.http_gate_for_resolve(p_run_id text, p_gate_id text) RETURNS SETOF tidebase.gates
LANGUAGE plpgsql AS $$
DECLARE
    r tidebase.runs%ROWTYPE;
    g tidebase.gates%ROWTYPE;
BEGIN
    SELECT * INTO r FROM tidebase.runs WHERE id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run_id USING ERRCODE = 'TB001';
    END IF;
    SELECT * INTO g FROM tidebase.gates WHERE run_id = p_run_id AND id = p_gate_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gate % of run % not found', p_gate_id, p_run_id USING ERRCODE = 'TB011';
    ELSIF g.status = 'pending' AND NOT tidebase.admits(r.status, r.fencing_token, NULL) THEN
        PERFORM tidebase.refuse(p_run_id, NULL);
    END IF;
    RETURN NEXT g;
END
$$;
