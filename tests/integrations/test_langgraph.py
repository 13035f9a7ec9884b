"""TidebaseSaver, the LangGraph checkpointer: LangGraph's own conformance suite (every capability, both APIs), real
compiled graphs with interrupt() resumed by a new saver and by a new process, fencing of a zombie writer, and what
the Studio shows of a thread."""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from tidebase import Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.errors import LeaseHeld, LeaseLost, RunCancelled
from tidebase.integrations.langgraph import TidebaseSaver


class Ticket(TypedDict):
    log: Annotated[list[str], operator.add]


def approve(state: Ticket) -> dict[str, Any]:
    answer = interrupt({"question": "refund order 42?"})
    return {"log": [f"approved:{answer}"]}


def support_graph() -> StateGraph[Ticket]:
    """plan -> approve (interrupts for a human) -> refund."""
    builder = StateGraph(Ticket)
    builder.add_node("plan", lambda state: {"log": ["plan"]})
    builder.add_node("approve", approve)
    builder.add_node("refund", lambda state: {"log": ["refund"]})
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "approve")
    builder.add_edge("approve", "refund")
    builder.add_edge("refund", END)
    return builder


def thread(thread_id: str, **extra: Any) -> Any:
    return {"configurable": {"thread_id": thread_id, **extra}}


def assert_gap_free(events: list[Any]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


# -- LangGraph's conformance suite -----------------------------------------------------------------------------------


async def conformance(tide: AsyncTidebase | Tidebase) -> Any:
    async def factory() -> Any:
        saver = TidebaseSaver(tide)
        yield saver
        await saver.aclose()

    report = await validate(checkpointer_test(name=f"TidebaseSaver({type(tide).__name__})")(factory))
    assert set(report.results) == {c.value for c in Capability}
    for name, result in report.results.items():
        assert result.detected, f"{name} is not implemented"
        assert result.passed is True, f"{name}: {result.failures}"
        assert result.tests_failed == 0 and result.tests_passed > 0
    assert report.passed_all() and report.conformance_level() == "FULL"
    return report


async def test_conformance_suite_passes_every_capability_with_async_tidebase(atide: AsyncTidebase) -> None:
    report = await conformance(atide)
    assert sum(r.tests_passed for r in report.results.values()) == 81


async def test_conformance_suite_passes_every_capability_with_sync_tidebase(tide: Tidebase) -> None:
    """The suite calls the async methods; with a sync Tidebase they run the sync API (and its store) in threads."""
    await conformance(tide)


# -- interrupts ------------------------------------------------------------------------------------------------------


async def test_interrupt_resumes_with_a_new_saver(atide: AsyncTidebase) -> None:
    config = thread("ticket-1")
    async with TidebaseSaver(atide) as first:
        out = await support_graph().compile(checkpointer=first).ainvoke({"log": ["start"]}, config)
    assert out["log"] == ["start", "plan"]
    assert out["__interrupt__"][0].value == {"question": "refund order 42?"}
    assert (await atide.runs.get("langgraph:ticket-1")).status == "waiting"  # released on exit

    second = TidebaseSaver(atide, wait=0)  # a fresh saver: nothing held in memory, the lease free at once
    graph = support_graph().compile(checkpointer=second)
    state = await graph.aget_state(config)
    assert state.next == ("approve",)
    assert state.tasks[0].interrupts[0].value == {"question": "refund order 42?"}
    out = await graph.ainvoke(Command(resume="yes"), config)
    assert out["log"] == ["start", "plan", "approved:yes", "refund"]
    history = [s async for s in graph.aget_state_history(config)]
    assert [s.metadata["step"] for s in history] == [3, 2, 1, 0, -1]
    await second.aclose()


def test_interrupt_resumes_in_another_process_at_once(tide: Tidebase, dsn: str, tmp_path: Path) -> None:
    """A process interrupts the graph and exits without releasing the thread; the next process resumes it at once
    (the holder process is gone, so its lease is taken over without waiting for it to expire)."""
    script = tmp_path / "first_half.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_langgraph import support_graph, thread
        from tidebase import Tidebase
        from tidebase.integrations.langgraph import TidebaseSaver

        tide = Tidebase(sys.argv[1])
        graph = support_graph().compile(checkpointer=TidebaseSaver(tide))
        out = graph.invoke({{"log": ["start"]}}, thread("ticket-2"))
        assert "__interrupt__" in out, out
        sys.exit(0)  # no release: the thread's run keeps this process's lease
    """))
    subprocess.run([sys.executable, str(script), dsn], check=True, timeout=120)
    run = tide.runs.get("langgraph:ticket-2")
    assert run.status == "running" and run.lease_owner is not None  # still leased to the exited process

    saver = TidebaseSaver(tide, wait=0)  # wait=0: a live holder would raise LeaseHeld
    out = support_graph().compile(checkpointer=saver).invoke(Command(resume="ok"), thread("ticket-2"))
    assert out["log"] == ["start", "plan", "approved:ok", "refund"]
    run = tide.runs.get("langgraph:ticket-2")
    assert (run.attempt, run.fencing_token) == (2, 2)
    assert [r["reason"] for r in tide.runs.recoveries("langgraph:ticket-2")] == ["owner_exited"]
    saver.close()



async def test_an_interrupt_inside_a_subgraph_resumes(atide: AsyncTidebase) -> None:
    """A subgraph checkpoints in its own namespace of the same thread (the same run) and resumes from there."""
    inner = support_graph().compile()
    outer = StateGraph(Ticket)
    outer.add_node("desk", inner)
    outer.add_edge(START, "desk")
    outer.add_edge("desk", END)
    reference = outer.compile(checkpointer=InMemorySaver())  # what LangGraph's own saver gives
    await reference.ainvoke({"log": ["start"]}, thread("ticket-6"))
    expected = await reference.ainvoke(Command(resume="yes"), thread("ticket-6"))
    async with TidebaseSaver(atide) as saver:
        graph = outer.compile(checkpointer=saver)
        out = await graph.ainvoke({"log": ["start"]}, thread("ticket-6"))
        assert out["__interrupt__"][0].value == {"question": "refund order 42?"}
        out = await graph.ainvoke(Command(resume="yes"), thread("ticket-6"))
    assert out == expected and out["log"][-3:] == ["plan", "approved:yes", "refund"]
    namespaces = {e.payload["checkpointNs"] for e in await atide.runs.events("langgraph:ticket-6")
                  if e.type == "langgraph.checkpoint"}
    assert "" in namespaces and any(ns.startswith("desk:") for ns in namespaces)


# -- fencing ---------------------------------------------------------------------------------------------------------


def test_a_zombie_saver_cannot_write_after_another_took_the_thread_over(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Worker A runs a graph and stalls inside a node; its lease expires (database clock, no sleep); worker B takes
    the thread over and runs it to the end; when A wakes, its writes are refused (LeaseLost) and nothing of A's node
    is stored; the thread's history and event log are B's, gap-free."""
    tide_a, tide_b = Tidebase(dsn), Tidebase(dsn)
    entered, wake = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def work(state: Ticket, config: RunnableConfig) -> dict[str, Any]:
        who = config["configurable"]["who"]
        if who == "A":
            entered.set()
            assert wake.wait(30)
        return {"log": [f"work:{who}"]}

    builder = StateGraph(Ticket)
    builder.add_node("work", work)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    saver_a, saver_b = TidebaseSaver(tide_a), TidebaseSaver(tide_b, wait=0)
    graph_a, graph_b = builder.compile(checkpointer=saver_a), builder.compile(checkpointer=saver_b)

    def run_a() -> None:
        try:
            outcome["a"] = graph_a.invoke({"log": ["from:A"]}, thread("shared", who="A"))
        except Exception as exc:  # the zombie's refusal is what this test is about
            outcome["a"] = exc

    worker_a = threading.Thread(target=run_a)
    worker_a.start()
    assert entered.wait(30)  # A holds the thread and has written its first checkpoints
    with pytest.raises(LeaseHeld):  # while A's lease is live, B is refused the thread
        graph_b.invoke({"log": ["from:B"]}, thread("shared", who="B"))
    db.execute("UPDATE tidebase.runs SET lease_expires_at = now() - interval '1 second' WHERE id = 'langgraph:shared'")

    out = graph_b.invoke({"log": ["from:B"]}, thread("shared", who="B"))
    assert out["log"][-2:] == ["from:B", "work:B"]
    wake.set()
    worker_a.join(30)
    assert isinstance(outcome["a"], LeaseLost)
    # the overtaken saver stays refused on the thread (no round trip, no wait) until an invocation reads it afresh
    with pytest.raises(LeaseLost, match="lost thread run"):
        saver_a.put_writes(graph_b.get_state(thread("shared")).config, [("log", ["late:A"])], "late-task")

    history = list(graph_b.get_state_history(thread("shared")))
    assert history[0].values["log"] == out["log"]
    assert all("work:A" not in snapshot.values.get("log", []) for snapshot in history)
    assert db.execute("SELECT count(*) FROM tidebase.langgraph_writes WHERE run_id = 'langgraph:shared' "
                      "AND position('work:A' in encode(blob, 'escape')) > 0").fetchone() == (0,)
    run = tide_b.runs.get("langgraph:shared")
    assert (run.fencing_token, run.attempt) == (2, 2)
    events = tide_b.runs.events("langgraph:shared")
    assert_gap_free(events)
    started = [i for i, e in enumerate(events) if e.type == "run.started"]
    assert len(started) == 2
    # every checkpoint after B's takeover is B's: A's stalled node left no event behind it
    assert all(e.type in ("langgraph.checkpoint", "langgraph.writes") for e in events[started[1] + 1:])
    saver_a.close()
    saver_b.close()
    tide_a.close()
    tide_b.close()


async def test_a_cancelled_thread_takes_no_more_checkpoints(atide: AsyncTidebase) -> None:
    saver = TidebaseSaver(atide)
    graph = support_graph().compile(checkpointer=saver)
    await graph.ainvoke({"log": ["start"]}, thread("ticket-3"))
    await atide.runs.cancel("langgraph:ticket-3", reason="customer left", actor="ops")
    with pytest.raises(RunCancelled):
        await graph.ainvoke(Command(resume="yes"), thread("ticket-3"))
    await saver.aclose()


# -- the thread as a run: Studio, forks, time travel -----------------------------------------------------------------


def test_the_thread_is_a_run_the_studio_lists(tide: Tidebase) -> None:
    with TidebaseSaver(tide) as saver:
        graph = support_graph().compile(checkpointer=saver)
        graph.invoke({"log": ["start"]}, thread("ticket-4"))
        run = tide.runs.get(saver.run_id("ticket-4"))
        assert (run.workflow, run.status, run.input) == ("langgraph", "running", {"threadId": "ticket-4"})
    page = tide.runs.list(workflow="langgraph")
    assert [r.id for r in page.runs] == ["langgraph:ticket-4"]
    assert page.runs[0].status == "waiting"  # the saver handed the thread back
    events = tide.runs.events("langgraph:ticket-4")
    assert_gap_free(events)
    checkpoints = [e.payload for e in events if e.type == "langgraph.checkpoint"]
    assert [(c["source"], c["step"]) for c in checkpoints] == [("input", -1), ("loop", 0), ("loop", 1)]
    writes = [e.payload for e in events if e.type == "langgraph.writes"]
    assert sum("__interrupt__" in w["channels"] for w in writes) == 1


def test_time_travel_and_copies_are_forks(tide: Tidebase) -> None:
    saver = TidebaseSaver(tide)
    graph = support_graph().compile(checkpointer=saver)
    graph.invoke({"log": ["start"]}, thread("ticket-5"))
    graph.invoke(Command(resume="yes"), thread("ticket-5"))
    # time travel: branch from the interrupted checkpoint (as with LangGraph's own savers) and answer otherwise
    interrupted = next(s for s in graph.get_state_history(thread("ticket-5")) if s.next == ("approve",))
    branch = graph.update_state(interrupted.config, {"log": ["edited"]})
    assert graph.get_state(branch).next == ("approve",)
    out = graph.invoke(Command(resume="no"), branch)
    assert out["log"] == ["start", "plan", "edited", "approved:no", "refund"]
    assert graph.get_state(thread("ticket-5")).values["log"] == out["log"]
    assert len(list(graph.get_state_history(thread("ticket-5")))) == 8  # both branches are kept

    saver.copy_thread("ticket-5", "ticket-5-copy")
    copy = tide.runs.get("langgraph:ticket-5-copy")
    assert copy.metadata["forkedFrom"] == "langgraph:ticket-5"
    assert [(e.edge_type, e.child_run_id) for e in tide.runs.get("langgraph:ticket-5").children] == [
        ("fork", "langgraph:ticket-5-copy")]
    source = [s.config["configurable"]["checkpoint_id"] for s in graph.get_state_history(thread("ticket-5"))]
    copied = [s.config["configurable"]["checkpoint_id"] for s in graph.get_state_history(thread("ticket-5-copy"))]
    assert copied == source
    # the copy goes on by itself; the source is untouched
    graph.update_state(thread("ticket-5-copy"), {"log": ["note"]})
    assert graph.get_state(thread("ticket-5-copy")).values["log"][-1] == "note"
    assert graph.get_state(thread("ticket-5")).values["log"] == out["log"]
    saver.close()


def test_thread_ids_map_to_run_ids_safely() -> None:
    assert TidebaseSaver.run_id("ticket-42") == "langgraph:ticket-42"
    odd = TidebaseSaver.run_id("user 7: chat/1")
    assert odd.startswith("langgraph-sha256:") and len(odd) <= 128
    assert TidebaseSaver.run_id("x" * 101) != TidebaseSaver.run_id("x" * 100)
    assert TidebaseSaver.run_id(42) == "langgraph:42"


async def test_the_api_follows_the_tidebase_it_was_made_with(atide: AsyncTidebase) -> None:
    saver = TidebaseSaver(atide)
    with pytest.raises(TypeError, match="async API"):
        saver.get_tuple(thread("t"))
    with pytest.raises(TypeError):
        TidebaseSaver("postgresql://")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strategy"):
        await saver.aprune(["t"], strategy="sometimes")
    await saver.aclose()


def test_the_example_runs_offline(dsn: str) -> None:
    """examples/langgraph_support.py interrupts at the approval, resumes with a new saver and completes."""
    example = Path(__file__).resolve().parents[2] / "examples" / "langgraph_support.py"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "TIDEBASE_DATABASE_URL")}
    done = subprocess.run([sys.executable, str(example)], env={**env, "TIDEBASE_DATABASE_URL": dsn},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "waiting for approval: Refund order 42 in full?"
    assert lines[1] == "answer: reply: your order 42 was refunded"
    assert lines[2] == "history: loop:3 <- loop:2 <- loop:1 <- loop:0 <- input:-1"
    assert lines[3].startswith("thread run: langgraph:ticket-") and "(waiting), 5 checkpoints" in lines[3]
