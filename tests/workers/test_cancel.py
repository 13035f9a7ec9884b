"""I9: cancellation is authoritative and one-way, and it cascades: the workflow sees RunCancelled at its next step,
gate or state write; a cancelled run accepts no write and cannot be completed or failed; pending gates become
`canceled` and child runs are cancelled with the parent. Deadlines cancel overdue runs with reason `deadline`."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from fix_probe import wait_until
from tidebase import Child, GateAlreadyResolved, RunCancelled, RunCompleted, Tidebase
from tidebase.ops.reconciler import Reconciler


def _in_thread(fn: Any) -> tuple[threading.Thread, list[BaseException], list[Any]]:
    errors: list[BaseException] = []
    results: list[Any] = []

    def body() -> None:
        try:
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    return thread, errors, results


def test_cancel_during_a_step(dsn: str, db: psycopg.Connection[Any]) -> None:
    """A run cancelled while a step runs: that step's completion is refused, the next step never runs, the workflow
    sees RunCancelled, and the run stays cancelled with the reason and actor (no completion, no failure)."""
    tide = Tidebase(dsn)
    entered, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow() -> str:
        entered.set()
        release.wait(30)
        return "late"

    def wf(run: Any, input: Any) -> Any:
        run.step("a", lambda: ran.append("a"))
        run.step("b", slow)
        ran.append("after b")
        run.step("c", lambda: ran.append("c"))
        return "done"

    thread, errors, _ = _in_thread(lambda: tide.run("wf", wf, run_id="r1"))
    assert entered.wait(30)
    cancelled = tide.runs.cancel("r1", reason="user asked", actor="alice")
    assert cancelled.status == "cancelled"
    release.set()
    thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], RunCancelled)
    assert ran == ["a"]
    run = tide.runs.get("r1")
    assert run.status == "cancelled" and run.cancel_reason == "user asked"
    assert [s.key for s in run.steps] == ["a"]
    assert db.execute("SELECT cancel_actor FROM tidebase.runs WHERE id = 'r1'").fetchone() == ("alice",)
    for statement in ("SELECT * FROM tidebase.complete_run('r1', %s, '1')",
                      "SELECT * FROM tidebase.fail_run('r1', %s, '{}', NULL, 10)"):
        with pytest.raises(psycopg.Error) as refused:
            db.execute(statement, (run.fencing_token,))
        assert refused.value.sqlstate == "TB004"  # RunCancelled
    assert tide.runs.cancel("r1", reason="again").cancel_reason == "user asked"  # one-way, first reason kept
    tide.close()


def test_cancel_during_a_gate(dsn: str) -> None:
    """A run blocked on a pending gate is woken by the cancel: the wait raises RunCancelled, and the gate is
    `canceled` (it can no longer be approved)."""
    tide = Tidebase(dsn)

    def wf(run: Any, input: Any) -> Any:
        return run.gate("approve", "ok?").decision

    thread, errors, _ = _in_thread(lambda: tide.run("wf", wf, run_id="g1"))
    wait_until(lambda: len(tide.gates.list(run_id="g1")) == 1, "the gate to open")
    tide.runs.cancel("g1", reason="too slow", actor="bob")
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], RunCancelled)
    gate = tide.gates.list(status=None, run_id="g1")[0]
    assert gate.status == "canceled" and gate.decision == "canceled"
    with pytest.raises(GateAlreadyResolved) as info:
        tide.gates.resolve(gate.id, "approved")
    assert (info.value.decision, info.value.actor) == ("canceled", "bob")
    tide.close()


def test_cancel_of_a_parent_cascades_to_children_and_their_gates(dsn: str, db: psycopg.Connection[Any]) -> None:
    """Cancelling a parent whose two children wait on gates cancels both children (same reason), cancels their
    gates, wakes their waits, and the parent's fan-out ends in RunCancelled; completed children stay completed."""
    tide = Tidebase(dsn)

    def quick(run: Any, input: Any) -> Any:
        return "quick"

    def waiter(run: Any, input: Any) -> Any:
        return run.gate("ok", "continue?").decision

    def parent(run: Any, input: Any) -> Any:
        run.child("quick", quick, name="q")
        return run.fanout("kids", [Child("a", waiter), Child("b", waiter)])

    thread, errors, _ = _in_thread(lambda: tide.run("parent", parent, run_id="p"))
    wait_until(lambda: len(tide.gates.list()) == 2, "both children to wait on their gates")
    tide.runs.cancel("p", reason="stop all", actor="ops")
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], RunCancelled)
    rows = db.execute("SELECT workflow, status, cancel_reason FROM tidebase.runs WHERE parent_id = 'p' "
                      "ORDER BY workflow").fetchall()
    assert rows == [("quick", "completed", None), ("waiter", "cancelled", "stop all"),
                    ("waiter", "cancelled", "stop all")]
    assert db.execute("SELECT DISTINCT status FROM tidebase.gates").fetchall() == [("canceled",)]
    quick_id = db.execute("SELECT id FROM tidebase.runs WHERE workflow = 'quick'").fetchone()
    assert quick_id is not None
    with pytest.raises(RunCompleted):
        tide.runs.cancel(quick_id[0])
    tide.close()


def test_deadline_cancels_overdue_runs(dsn: str, db: psycopg.Connection[Any]) -> None:
    """A queued run past its deadline is cancelled by the reconciler with reason `deadline`; one within its
    deadline is left alone."""
    tide = Tidebase(dsn)
    overdue = tide.enqueue("wf", deadline=0.0)
    fine = tide.enqueue("wf", deadline=3600)
    result = Reconciler(tide).tick()
    assert result.active and result.cancelled == [overdue.id]
    run = tide.runs.get(overdue.id)
    assert run.status == "cancelled" and run.cancel_reason == "deadline"
    assert tide.runs.get(fine.id).status == "queued"
    tide.close()
