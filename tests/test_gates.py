"""I5, approval gates, against real Postgres (generated from the async source).

Only behaviour that needs no second client lives here; waiters woken by another client and racing resolvers are in
concurrency/test_gates.py.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg
import pytest

from tidebase import (
    Forbidden,
    GateAlreadyResolved,
    InvalidArgument,
    LeaseLost,
    NotFound,
    PayloadError,
    RunCancelled,
    RunSuspended,
)
from tidebase.agents.gates import GateDecision
from tidebase.client import Tidebase


def count(db: psycopg.Connection[Any], sql: str, *args: Any) -> Any:
    row = db.execute(sql, args).fetchone()
    assert row is not None
    return row[0]


def as_dict(decision: GateDecision) -> dict[str, Any]:
    return {"decision": decision.decision, "actor": decision.actor, "payload": decision.payload,
            "approved": decision.approved, "gate_id": decision.gate_id, "name": decision.name}


def suspend_at_gate(tide: Tidebase, run_id: str, name: str = "approve") -> str:
    """Runs a workflow that suspends at gate `name`; returns the gate id."""

    def wf(run: Any, input: Any) -> Any:
        return as_dict(run.gate(name, f"{name}?", suspend=True))

    with pytest.raises(RunSuspended) as info:
        tide.run("review", wf, run_id=run_id)
    return str(info.value.gate_id)


def test_begin_creates_the_gate_once_and_only_the_creator_gets_the_token(
    tide: Tidebase, db: psycopg.Connection[Any]
) -> None:
    """A gate is created once per (run, name): a second begin returns the same gate, unchanged and without its token;
    only the token's SHA-256 is stored, and no read or event exposes the token."""
    seen: dict[str, Any] = {}

    def wf(run: Any, input: Any) -> Any:
        seen["first"] = run.gates.begin("approve", "Ship it?", data={"pr": 7})
        seen["again"] = run.gates.begin("approve", "another prompt", data={"pr": 8})
        seen["get"] = run.gates.get(seen["first"].id)
        return None

    tide.run("w", wf, run_id="b-1")
    first, again, got = seen["first"], seen["again"], seen["get"]
    assert first.id.startswith("gate_") and len(first.id) == 37
    assert len(first.token) == 32 and int(first.token, 16) >= 0
    assert (first.run_id, first.name, first.prompt, first.data) == ("b-1", "approve", "Ship it?", {"pr": 7})
    assert (first.status, first.decision, first.actor, first.payload, first.resolved_at) == (
        "pending", None, None, None, None)
    assert (again.id, again.prompt, again.data, again.token) == (first.id, "Ship it?", {"pr": 7}, None)
    assert (got.id, got.token, got.run_status) == (first.id, None, "running")
    assert (tide.gates.get(first.id)).token is None
    assert first.token not in repr(first)
    digest = hashlib.sha256(first.token.encode()).hexdigest()
    assert count(db, "SELECT count(*) FROM tidebase.gates WHERE token_hash = %s", digest) == 1
    assert count(db, "SELECT count(*) FROM tidebase.gates g WHERE row_to_json(g)::text LIKE %s",
                 f"%{first.token}%") == 0
    assert count(db, "SELECT count(*) FROM tidebase.events WHERE payload::text LIKE %s", f"%{first.token}%") == 0
    assert [e.type for e in tide.runs.events("b-1")].count("gate.created") == 1


def test_suspended_gate_resumes_past_the_gate_once_resolved(
    tide: Tidebase, db: psycopg.Connection[Any]
) -> None:
    """suspend=True releases the lease and parks the run in `waiting` (RunSuspended names the gate); once the gate
    is resolved, invoking the run again replays the steps before it and returns the decision."""
    executed: list[str] = []

    def wf(run: Any, input: Any) -> Any:
        draft = run.step("draft", lambda: executed.append("draft") or "text")
        decision = run.gate("publish", "Publish the draft?", data={"draft": draft}, suspend=True)
        return {"draft": draft, **as_dict(decision)}

    with pytest.raises(RunSuspended, match="publish") as info:
        tide.run("writer", wf, run_id="s-1")
    gate_id = info.value.gate_id
    run = tide.runs.get("s-1")
    assert (run.status, run.lease_owner, run.lease_expires_at, run.error) == ("waiting", None, None, None)
    assert (tide.gates.get(gate_id)).status == "pending"
    with pytest.raises(RunSuspended):  # still pending: resuming suspends again, at the same gate
        tide.run("writer", wf, run_id="s-1")
    resolved = tide.gates.resolve(gate_id, "approved", actor="alice", payload={"note": "ship"})
    assert (resolved.status, resolved.decision, resolved.actor, resolved.token) == (
        "approved", "approved", "alice", None)
    assert resolved.payload == {"note": "ship"} and resolved.resolved_at is not None
    assert resolved.run_status == "waiting"
    assert tide.run("writer", wf, run_id="s-1") == {
        "draft": "text", "decision": "approved", "actor": "alice", "payload": {"note": "ship"}, "approved": True,
        "gate_id": gate_id, "name": "publish"}
    assert executed == ["draft"]
    assert (tide.runs.get("s-1")).status == "completed"
    assert count(db, "SELECT count(*) FROM tidebase.gates WHERE run_id = 's-1'") == 1


def test_resolved_decision_is_replayed_on_resume(tide: Tidebase) -> None:
    """I5: a gate resolved before the run reaches it returns at once, and a resumed run gets the same recorded
    decision again without creating or waiting for a new gate."""
    failures = [True]
    decisions: list[dict[str, Any]] = []

    def wf(run: Any, input: Any) -> Any:
        gate = run.gates.begin("approve", "ok?")
        if gate.token is not None:
            tide.gates.resolve(gate.id, "rejected", actor="bob", payload={"why": "too risky"},
                                      token=gate.token)
        decisions.append(as_dict(run.gate("approve", "ok?", timeout=30)))
        if failures.pop():
            raise RuntimeError("crash after the gate")
        return decisions[-1]["decision"]

    with pytest.raises(RuntimeError, match="crash after the gate"):
        tide.run("w", wf, run_id="rp-1")
    failures.append(False)
    assert tide.run("w", wf, run_id="rp-1") == "rejected"
    assert decisions[0] == decisions[1]
    assert (decisions[0]["decision"], decisions[0]["actor"], decisions[0]["payload"], decisions[0]["approved"]) == (
        "rejected", "bob", {"why": "too risky"}, False)
    types = [e.type for e in tide.runs.events("rp-1")]
    assert types.count("gate.created") == 1 and types.count("gate.resolved") == 1
    assert "run.suspended" not in types


def test_timeout_without_decision_suspends_and_frees_the_listener(dsn: str) -> None:
    """A blocking wait whose timeout passes without a decision suspends the run like suspend=True, leaving the gate
    pending, and the connection it listened on goes back to the pool no longer listening."""
    with Tidebase(dsn, pool_min_size=1, pool_max_size=1) as tide:

        def wf(run: Any, input: Any) -> Any:
            return as_dict(run.gate("approve", "ok?", timeout=0.2))

        with pytest.raises(RunSuspended) as info:
            tide.run("w", wf, run_id="t-1")
        gate = tide.gates.get(info.value.gate_id)
        assert (gate.status, gate.run_status) == ("pending", "waiting")
        with tide._require_db().pool.connection() as conn:  # the pool's only connection: the waiter's
            cur = conn.execute("SELECT count(*) FROM pg_listening_channels()")
            assert cur.fetchone() == (0,)
        types = [e.type for e in tide.runs.events("t-1")]
        assert types[-2:] == ["gate.created", "run.suspended"]
        tide.gates.resolve(gate.id, "canceled", actor="ops")
        assert (tide.run("w", wf, run_id="t-1"))["decision"] == "canceled"


def test_resume_by_a_new_instance_returns_the_recorded_decision(dsn: str, tide: Tidebase) -> None:
    """When the process that waited is gone, a new Tidebase resuming the run after the gate was resolved gets the
    decision recorded by the resolve; the gate is not created again."""
    gate_id = suspend_at_gate(tide, "nx-1")
    tide.gates.resolve(gate_id, "approved", actor="carol")
    tide.close()
    with Tidebase(dsn) as fresh:

        def wf(run: Any, input: Any) -> Any:
            return as_dict(run.gate("approve", "approve?", suspend=True))

        result = fresh.run("review", wf, run_id="nx-1")
        assert (result["gate_id"], result["decision"], result["actor"]) == (gate_id, "approved", "carol")
        assert [e.type for e in fresh.runs.events("nx-1")].count("gate.created") == 1


def test_resolve_unknown_gate_raises_not_found(tide: Tidebase) -> None:
    """Resolving or reading a gate that does not exist raises NotFound, with or without a token."""
    with pytest.raises(NotFound, match="gate_missing"):
        tide.gates.resolve("gate_missing", "approved")
    with pytest.raises(NotFound):
        tide.gates.resolve("gate_missing", "approved", token="0" * 32)
    with pytest.raises(NotFound):
        tide.gates.get("gate_missing")


def test_wrong_token_is_forbidden_and_writes_nothing(tide: Tidebase, db: psycopg.Connection[Any]) -> None:
    """A resolve with a token that is not the gate's raises Forbidden and writes nothing; the right token works."""
    seen: dict[str, Any] = {}

    def wf(run: Any, input: Any) -> Any:
        seen["gate"] = run.gates.begin("approve", "ok?")
        return as_dict(run.gate("approve", "ok?", suspend=True))

    with pytest.raises(RunSuspended):
        tide.run("w", wf, run_id="tok-1")
    gate = seen["gate"]
    seq = count(db, "SELECT event_seq FROM tidebase.runs WHERE id = 'tok-1'")
    for wrong in ("0" * 32, gate.token.upper(), "", gate.token + "0"):
        with pytest.raises(Forbidden):
            tide.gates.resolve(gate.id, "approved", actor="mallory", token=wrong)
    assert (tide.gates.get(gate.id)).status == "pending"
    assert count(db, "SELECT event_seq FROM tidebase.runs WHERE id = 'tok-1'") == seq
    assert count(db, "SELECT count(*) FROM tidebase.events WHERE run_id = 'tok-1' AND type = 'gate.resolved'") == 0
    resolved = tide.gates.resolve(gate.id, "approved", actor="alice", token=gate.token)
    assert (resolved.status, resolved.actor, resolved.run_status, resolved.token) == (
        "approved", "alice", "waiting", None)


def test_bad_arguments_raise_invalid_argument_and_write_nothing(
    tide: Tidebase, db: psycopg.Connection[Any]
) -> None:
    """Unknown decisions (`cancelled` is spelled `canceled`), statuses, limits and gate names, and gate data that
    cannot be stored, are refused before anything is written."""
    gate_id = suspend_at_gate(tide, "arg-1")
    seq = count(db, "SELECT event_seq FROM tidebase.runs WHERE id = 'arg-1'")
    for decision in ("approve", "cancelled", "pending", ""):
        with pytest.raises(InvalidArgument, match="decision"):
            tide.gates.resolve(gate_id, decision)
    assert (tide.gates.get(gate_id)).status == "pending"
    assert count(db, "SELECT event_seq FROM tidebase.runs WHERE id = 'arg-1'") == seq
    with pytest.raises(InvalidArgument, match="status"):
        tide.gates.list(status="done")
    with pytest.raises(InvalidArgument, match="run_id"):
        tide.gates.list(status=None)
    with pytest.raises(InvalidArgument, match="limit"):
        tide.gates.list(limit=0)

    def bad_name(run: Any, input: Any) -> Any:
        run.gate("", suspend=True)

    def bad_data(run: Any, input: Any) -> Any:
        run.gate("g", data={"k": "\u0000"}, suspend=True)

    with pytest.raises(InvalidArgument, match="gate name"):
        tide.run("w", bad_name, run_id="arg-2")
    with pytest.raises(PayloadError, match="gate data"):
        tide.run("w", bad_data, run_id="arg-3")
    assert count(db, "SELECT count(*) FROM tidebase.gates WHERE run_id IN ('arg-2', 'arg-3')") == 0


def test_second_resolve_raises_gate_already_resolved_with_the_first_decision(
    tide: Tidebase, db: psycopg.Connection[Any]
) -> None:
    """I5: a gate resolves exactly once; a later resolve, with another decision or the same one, raises
    GateAlreadyResolved carrying the first decision and actor, and changes nothing."""
    gate_id = suspend_at_gate(tide, "twice-1")
    tide.gates.resolve(gate_id, "approved", actor="alice", payload={"n": 1})
    for decision, actor in (("rejected", "bob"), ("approved", "carol")):
        with pytest.raises(GateAlreadyResolved) as info:
            tide.gates.resolve(gate_id, decision, actor=actor, payload={"n": 2})
        assert (info.value.decision, info.value.actor) == ("approved", "alice")
    gate = tide.gates.get(gate_id)
    assert (gate.status, gate.actor, gate.payload) == ("approved", "alice", {"n": 1})
    assert count(db, "SELECT count(*) FROM tidebase.events WHERE run_id = 'twice-1' AND type = 'gate.resolved'") == 1


def test_list_and_get_gates(tide: Tidebase) -> None:
    """gates.list returns the review queue oldest first, filtered by status and optionally by run; run.gates.get only
    sees the run's own gates."""
    first = suspend_at_gate(tide, "ls-1", "legal")
    second = suspend_at_gate(tide, "ls-2", "finance")
    pending = tide.gates.list()
    assert [(g.id, g.run_id, g.name, g.prompt, g.status, g.decision, g.actor) for g in pending] == [
        (first, "ls-1", "legal", "legal?", "pending", None, None),
        (second, "ls-2", "finance", "finance?", "pending", None, None)]
    assert all(g.token is None and g.run_status == "waiting" for g in pending)
    tide.gates.resolve(first, "rejected", actor="dana")
    assert [g.id for g in tide.gates.list()] == [second]
    assert [(g.id, g.decision, g.actor) for g in tide.gates.list("rejected")] == [(first, "rejected", "dana")]
    assert [g.id for g in tide.gates.list(None, run_id="ls-1")] == [first]
    assert tide.gates.list("pending", run_id="ls-1") == []
    assert tide.gates.list(None, run_id="no-such-run") == []
    assert len(tide.gates.list(limit=1)) == 1

    def peek(run: Any, input: Any) -> Any:
        with pytest.raises(NotFound):
            run.gates.get(second)  # a gate of another run
        return (run.gates.get(first)).decision

    assert tide.run("review", peek, run_id="ls-1") == "rejected"


def test_gate_events_are_appended_gap_free(tide: Tidebase) -> None:
    """I4 with gates: gate.created, run.suspended and gate.resolved are appended to the run's log with gap-free seqs
    and payloads that name the gate (never its token)."""
    gate_id = suspend_at_gate(tide, "ev-1")
    tide.gates.resolve(gate_id, "approved", actor="erin", payload={"ok": True})

    def wf(run: Any, input: Any) -> Any:
        return as_dict(run.gate("approve", "approve?"))

    assert (tide.run("review", wf, run_id="ev-1"))["actor"] == "erin"
    events = tide.runs.events("ev-1")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events] == [
        "run.created", "run.started", "gate.created", "run.suspended", "gate.resolved", "run.started",
        "run.completed"]
    by_type = {e.type: e.payload for e in events}
    created, resolved = by_type["gate.created"], by_type["gate.resolved"]
    # each gate event also carries the gate as it was then (the HTTP API shows it), without its token hash
    assert (created.pop("gate")["status"], resolved.pop("gate")["status"]) == ("pending", "approved")
    assert "token_hash" not in json.dumps([e.payload for e in events])
    assert created == {"gateId": gate_id, "name": "approve", "prompt": "approve?", "data": {}}
    assert by_type["run.suspended"] == {"gateId": gate_id}
    assert resolved == {"gateId": gate_id, "name": "approve", "decision": "approved", "actor": "erin",
                        "payload": {"ok": True}}


def test_gates_are_fenced_by_the_lease_and_by_cancellation(
    tide: Tidebase, db: psycopg.Connection[Any]
) -> None:
    """A holder whose lease was taken over cannot open a gate (LeaseLost), a cancelled run cannot either
    (RunCancelled), and a cancelled run's gate (canceled with it) cannot be resolved (GateAlreadyResolved with
    decision `canceled`); none of this writes a gate."""

    def zombie(run: Any, input: Any) -> Any:
        db.execute("UPDATE tidebase.runs SET fencing_token = fencing_token + 1 WHERE id = %s", (run.run_id,))
        run.gate("approve", suspend=True)

    def cancelled(run: Any, input: Any) -> Any:
        tide.runs.cancel(run.run_id, reason="stop")
        run.gate("approve", suspend=True)

    with pytest.raises(LeaseLost):
        tide.run("w", zombie, run_id="f-1")
    with pytest.raises(RunCancelled):
        tide.run("w", cancelled, run_id="f-2")
    assert count(db, "SELECT count(*) FROM tidebase.gates WHERE run_id IN ('f-1', 'f-2')") == 0
    gate_id = suspend_at_gate(tide, "f-3")
    tide.runs.cancel("f-3", actor="ops")
    with pytest.raises(GateAlreadyResolved) as info:
        tide.gates.resolve(gate_id, "approved")
    assert (info.value.decision, info.value.actor) == ("canceled", "ops")
    gate = tide.gates.get(gate_id)
    assert (gate.status, gate.run_status) == ("canceled", "cancelled")
