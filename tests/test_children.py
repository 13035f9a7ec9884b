"""Child runs and fan-out against real Postgres (generated from the async source)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tidebase import Tidebase
from tidebase.agents.children import Child
from tidebase.errors import ChildConflict, InputMismatch, InvalidArgument


class Crash(BaseException):
    """Stands for a process dying: not an Exception, so nothing in the workflow catches it."""


def count(db: psycopg.Connection[Any], sql: str, *args: Any) -> Any:
    row = db.execute(sql, args).fetchone()
    assert row is not None
    return row[0]


def square(run: Any, input: Any) -> Any:
    n = run.step("square", lambda: input["n"] * input["n"])
    return {"n": input["n"], "sq": n}


def test_child_is_created_once_and_its_result_returned(
    tide: Tidebase, db: psycopg.Connection[Any]
) -> None:
    """I6: run.child creates one child run per edge name and returns the child's result; calling it again with the
    same edge in the same run returns the same child's result without executing it again."""
    calls: list[int] = []

    def child(run: Any, input: Any) -> Any:
        calls.append(input["n"])
        return square(run, input)

    def parent(run: Any, input: Any) -> Any:
        first = run.child("square", child, name="sq", input={"n": 3})
        again = run.child("square", child, name="sq", input={"n": 3})
        return [first, again]

    assert tide.run("parent", parent, run_id="p-1") == [{"n": 3, "sq": 9}] * 2
    assert calls == [3]
    assert count(db, "SELECT count(*) FROM tidebase.runs WHERE parent_id = 'p-1'") == 1
    assert count(db, "SELECT count(*) FROM tidebase.run_edges WHERE parent_run_id = 'p-1'") == 1
    child_id = count(db, "SELECT id FROM tidebase.runs WHERE parent_id = 'p-1'")
    child_run = tide.runs.get(child_id)
    assert (child_run.status, child_run.workflow, child_run.input) == ("completed", "square", {"n": 3})
    assert child_run.metadata == {"parentRunId": "p-1", "parentEdgeName": "sq"}


def test_resumed_parent_reuses_the_completed_child(tide: Tidebase, db: psycopg.Connection[Any]) -> None:
    """I6: a parent that crashed after its child completed gets the child's stored result when it is re-invoked; the
    child workflow is not called again and no second child is created."""
    calls: list[int] = []
    crash = [True]

    def child(run: Any, input: Any) -> Any:
        calls.append(input["n"])
        return square(run, input)

    def parent(run: Any, input: Any) -> Any:
        result = run.child("square", child, name="sq", input={"n": 4})
        if crash[0]:
            crash[0] = False
            raise Crash
        return result

    with pytest.raises(Crash):
        tide.run("parent", parent, run_id="p-2")
    assert tide.run("parent", parent, run_id="p-2") == {"n": 4, "sq": 16}
    assert calls == [4]
    assert count(db, "SELECT count(*) FROM tidebase.runs WHERE parent_id = 'p-2'") == 1


def test_resumed_parent_resumes_an_unfinished_child(tide: Tidebase) -> None:
    """A child that failed is resumed from its own checkpoints when the parent is re-invoked: its completed steps
    are replayed, and the same child run completes."""
    executed: list[str] = []
    fail = [True]

    def record(name: str, value: int) -> int:
        executed.append(name)
        return value

    def child(run: Any, input: Any) -> Any:
        a = run.step("a", lambda: record("a", 1))
        if fail[0]:
            fail[0] = False
            raise RuntimeError("child broke")
        return a + run.step("b", lambda: record("b", 2))

    def parent(run: Any, input: Any) -> Any:
        return run.child("two-steps", child, name="c")

    with pytest.raises(RuntimeError, match="child broke"):
        tide.run("parent", parent, run_id="p-3")
    assert tide.run("parent", parent, run_id="p-3") == 3
    assert executed == ["a", "b"]
    (edge,) = (tide.runs.get("p-3")).children
    child_run = tide.runs.get(edge.child_run_id)
    assert (child_run.status, child_run.attempt) == ("completed", 2)


def test_child_with_another_workflow_or_input_raises_child_conflict(
    tide: Tidebase, db: psycopg.Connection[Any]
) -> None:
    """An edge name already bound to a child of another workflow name or input raises ChildConflict (an
    InputMismatch) naming the existing child, and creates nothing."""
    seen: dict[str, Any] = {}

    def parent(run: Any, input: Any) -> Any:
        run.child("square", square, name="sq", input={"n": 2})
        for workflow_name, child_input in (("cube", {"n": 2}), ("square", {"n": 5}), ("square", None)):
            with pytest.raises(ChildConflict) as info:
                run.child(workflow_name, square, name="sq", input=child_input)
            seen.setdefault("ids", []).append(info.value.child_run_id)  # type: ignore[attr-defined]
        return "ok"

    assert tide.run("parent", parent, run_id="p-4") == "ok"
    child_id = count(db, "SELECT child_run_id FROM tidebase.run_edges WHERE parent_run_id = 'p-4'")
    assert seen["ids"] == [child_id] * 3
    assert issubclass(ChildConflict, InputMismatch)
    assert count(db, "SELECT count(*) FROM tidebase.runs WHERE parent_id = 'p-4'") == 1


def test_edges_link_parent_and_child(tide: Tidebase) -> None:
    """runs.get(parent).children lists the edges where it is the parent; runs.get(child).parent_id names the parent;
    the child run has its own steps, the parent has none of them."""

    def parent(run: Any, input: Any) -> Any:
        run.step("prepare", lambda: "p")
        return run.child("square", square, name="sq", input={"n": 6})

    assert tide.run("parent", parent, run_id="p-5") == {"n": 6, "sq": 36}
    parent_run = tide.runs.get("p-5")
    (edge,) = parent_run.children
    assert (edge.parent_run_id, edge.name, edge.edge_type, edge.metadata) == ("p-5", "sq", "child", {})
    assert edge.id.startswith("edge_")
    child_run = tide.runs.get(edge.child_run_id)
    assert child_run.parent_id == "p-5" and child_run.children == ()
    assert [s.key for s in child_run.steps] == ["square"]
    assert [s.key for s in parent_run.steps] == ["prepare"]
    assert parent_run.parent_id is None


def test_fanout_returns_results_in_order_and_checkpoints_the_join(
    tide: Tidebase, db: psycopg.Connection[Any]
) -> None:
    """run.fanout runs every child as a run of its own with a `fanout` edge `<name>/<child>`, and returns their
    results in child order, stored as the parent's step `join:<name>`."""

    def parent(run: Any, input: Any) -> Any:
        children = [Child(f"c{i}", square, input={"n": i}) for i in range(6)]
        return run.fanout("batch", children, max_concurrency=3)

    expected = [{"n": i, "sq": i * i} for i in range(6)]
    assert tide.run("parent", parent, run_id="p-6") == expected
    parent_run = tide.runs.get("p-6")
    (join,) = parent_run.steps
    assert (join.key, join.status, join.output) == ("join:batch", "completed", expected)
    assert sorted(e.name for e in parent_run.children) == [f"batch/c{i}" for i in range(6)]
    assert {(e.edge_type, str(e.metadata)) for e in parent_run.children} == {("fanout", str({"fanout": "batch"}))}
    workflows = db.execute("SELECT DISTINCT workflow, status FROM tidebase.runs WHERE parent_id = 'p-6'").fetchall()
    assert workflows == [("square", "completed")]


def test_resumed_fanout_reuses_finished_children_and_resumes_the_failed_one(
    tide: Tidebase, db: psycopg.Connection[Any]
) -> None:
    """I6 under resume: when one child fails, the fan-out raises its exception after the others finished and stores
    no join; re-invoking the parent does not execute the finished children again, resumes the failed one, and
    creates no child twice."""
    executed: list[str] = []
    fail = [True]

    def work(run: Any, input: Any) -> Any:
        def body() -> Any:
            executed.append(input["id"])
            if input["id"] == "b" and fail[0]:
                fail[0] = False
                raise RuntimeError("b failed")
            return input["id"].upper()

        return run.step("work", body)

    def parent(run: Any, input: Any) -> Any:
        return run.fanout("f", [Child(x, work, input={"id": x}) for x in "abc"])

    with pytest.raises(RuntimeError, match="b failed"):
        tide.run("parent", parent, run_id="p-7")
    assert sorted(executed) == ["a", "b", "c"]
    first = tide.runs.get("p-7")
    assert first.status == "failed"
    assert [(s.key, s.status) for s in first.steps] == [("join:f", "failed_retryable")]
    assert tide.run("parent", parent, run_id="p-7") == ["A", "B", "C"]
    assert sorted(executed) == ["a", "b", "b", "c"]
    rows = db.execute("SELECT workflow, status, attempt FROM tidebase.runs WHERE parent_id = 'p-7' "
                      "ORDER BY metadata->>'parentEdgeName'").fetchall()
    assert rows == [("work", "completed", 1), ("work", "completed", 2), ("work", "completed", 1)]
    assert count(db, "SELECT count(*) FROM tidebase.run_edges WHERE parent_run_id = 'p-7'") == 3


def test_replayed_join_touches_no_child(tide: Tidebase, db: psycopg.Connection[Any]) -> None:
    """A parent resumed after its fan-out completed gets the stored join: no child is created, leased or executed
    (the children passed on replay would fail if they ran)."""
    crash = [True]

    def boom(run: Any, input: Any) -> Any:
        raise AssertionError("a child ran on replay")

    def parent(run: Any, input: Any) -> Any:
        workflow = square if crash[0] else boom
        joined = run.fanout("f", [Child(f"c{i}", workflow, input={"n": i}, workflow_name="square")
                                        for i in range(3)])
        if crash[0]:
            crash[0] = False
            raise Crash
        return joined

    with pytest.raises(Crash):
        tide.run("parent", parent, run_id="p-8")
    children_before = db.execute("SELECT id, attempt, event_seq FROM tidebase.runs WHERE parent_id = 'p-8' "
                                 "ORDER BY id").fetchall()
    assert tide.run("parent", parent, run_id="p-8") == [{"n": i, "sq": i * i} for i in range(3)]
    children_after = db.execute("SELECT id, attempt, event_seq FROM tidebase.runs WHERE parent_id = 'p-8' "
                                "ORDER BY id").fetchall()
    assert children_after == children_before and len(children_after) == 3
    created = [e for e in tide.runs.events("p-8") if e.type == "run.child.created"]
    assert len(created) == 3


def test_repeated_fanout_name_gets_its_own_join_and_children(tide: Tidebase) -> None:
    """The second fan-out of one name in a run is step `join:<name>#2` with edges `<name>#2/<child>`, so it gets
    children of its own, also for other inputs; its replay is stable."""
    crash = [True]

    def parent(run: Any, input: Any) -> Any:
        out = [run.fanout("round", [Child("x", square, input={"n": r})]) for r in (2, 3)]
        if crash[0]:
            crash[0] = False
            raise Crash
        return out

    with pytest.raises(Crash):
        tide.run("parent", parent, run_id="p-9")
    assert tide.run("parent", parent, run_id="p-9") == [[{"n": 2, "sq": 4}], [{"n": 3, "sq": 9}]]
    parent_run = tide.runs.get("p-9")
    assert [s.key for s in parent_run.steps] == ["join:round", "join:round#2"]
    assert sorted(e.name for e in parent_run.children) == ["round#2/x", "round/x"]


def test_fanout_rejects_duplicate_child_names_before_writing(
    tide: Tidebase, db: psycopg.Connection[Any]
) -> None:
    """Child names must be unique within a fan-out, and max_concurrency at least 1: InvalidArgument, nothing
    written."""

    def parent(run: Any, input: Any) -> Any:
        with pytest.raises(InvalidArgument, match="used twice"):
            run.fanout("f", [Child("a", square, input={"n": 1}), Child("a", square, input={"n": 2})])
        with pytest.raises(InvalidArgument, match="max_concurrency"):
            run.fanout("f", [Child("a", square, input={"n": 1})], max_concurrency=0)
        return "ok"

    assert tide.run("parent", parent, run_id="p-10") == "ok"
    assert count(db, "SELECT count(*) FROM tidebase.runs WHERE parent_id = 'p-10'") == 0
    assert (tide.runs.get("p-10")).steps == ()
    with pytest.raises(InvalidArgument, match="workflow_name"):
        Child("a", object())  # type: ignore[arg-type]


def test_child_created_events_on_the_parent_are_gap_free(tide: Tidebase) -> None:
    """Creating children appends run.child.created on the parent (child id, edge, type, workflow) in the same gap-free
    seq order as its other events; the child's log starts with its own run.created."""

    def parent(run: Any, input: Any) -> Any:
        run.step("before", lambda: 1)
        run.fanout("f", [Child(f"c{i}", square, input={"n": i}) for i in range(3)], max_concurrency=2)
        return run.child("square", square, name="solo", input={"n": 9})

    tide.run("parent", parent, run_id="p-11")
    events = tide.runs.events("p-11")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    created = [e.payload for e in events if e.type == "run.child.created"]
    assert sorted(p["edge"] for p in created) == ["f/c0", "f/c1", "f/c2", "solo"]
    assert {(p["edgeType"], p["workflowName"]) for p in created} == {("fanout", "square"), ("child", "square")}
    solo = next(p for p in created if p["edge"] == "solo")
    child_events = tide.runs.events(solo["childRunId"])
    assert child_events[0].type == "run.created" and child_events[-1].type == "run.completed"
    assert [e.seq for e in child_events] == list(range(1, len(child_events) + 1))
