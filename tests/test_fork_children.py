"""Forks and child runs against real Postgres: a fork replays the children that completed by its fork point from their
stored results, and runs every other child fresh as a child run of its own.

Hand-written for both flavours (the fork copies rows in SQL, the same for both): each test counts the executions of
every child's steps with a side counter.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tidebase import ChildConflict, Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.models import Run


def edges(run: Run) -> dict[str, str]:
    """The child edges of a run (not its forks), as {edge name: child run id}."""
    return {e.name: e.child_run_id for e in run.children if e.edge_type != "fork"}


def kid(executed: Counter[str]) -> Callable[[Any, Any], Any]:
    """A child workflow with one step, counted under the child's topic."""

    def workflow(run: Any, input: Any) -> Any:
        def work() -> str:
            executed[input["topic"]] += 1
            run.usage.record(kind="llm", input_tokens=10, output_tokens=5)
            return f"notes on {input['topic']}"

        return run.step("work", work)

    return workflow


def research(executed: Counter[str]) -> Callable[[Any, Any], Any]:
    """A parent with child `flights` before step `search` and child `hotels` after it, then step `answer`."""
    child = kid(executed)

    def workflow(run: Any, input: Any) -> Any:
        flights = run.child("kid", child, name="flights", input={"topic": "flights"})
        docs = run.step("search", lambda: "docs")
        hotels = run.child("kid", child, name="hotels", input={"topic": "hotels"})
        return run.step("answer", lambda: [flights, docs, hotels])

    return workflow


def akid(executed: Counter[str]) -> Callable[[Any, Any], Any]:
    async def workflow(run: Any, input: Any) -> Any:
        async def work() -> str:
            executed[input["topic"]] += 1
            await run.usage.record(kind="llm", input_tokens=10, output_tokens=5)
            return f"notes on {input['topic']}"

        return await run.step("work", work)

    return workflow


def aresearch(executed: Counter[str]) -> Callable[[Any, Any], Any]:
    child = akid(executed)

    async def workflow(run: Any, input: Any) -> Any:
        flights = await run.child("kid", child, name="flights", input={"topic": "flights"})
        docs = await run.step("search", lambda: "docs")
        hotels = await run.child("kid", child, name="hotels", input={"topic": "hotels"})
        return await run.step("answer", lambda: [flights, docs, hotels])

    return workflow


EXPECTED = ["notes on flights", "docs", "notes on hotels"]


def test_fork_replays_the_child_before_the_fork_point_and_runs_the_one_after_fresh(tide: Tidebase) -> None:
    """Invoking a fork taken between two children executes no step of the first child (its stored result comes back
    from the source's child run) and runs the second one as a new child run of the fork."""
    executed: Counter[str] = Counter()
    wf = research(executed)
    assert tide.run("research", wf, run_id="src") == EXPECTED
    source = tide.runs.get("src")
    tide.runs.fork("src", at_step="search", new_run_id="fork")
    executed.clear()
    assert tide.run("research", wf, run_id="fork") == EXPECTED
    assert executed == Counter({"hotels": 1})
    fork = edges(tide.runs.get("fork"))
    assert fork["flights"] == edges(source)["flights"]
    hotels = tide.runs.get(fork["hotels"])
    assert hotels.id != edges(source)["hotels"] and (hotels.parent_id, hotels.status) == ("fork", "completed")
    flights = tide.runs.get(fork["flights"])
    assert (flights.parent_id, flights.attempt) == ("src", 1)  # the fork did not drive the source's child
    assert tide.runs.get("src").updated_at == source.updated_at


async def test_async_fork_replays_the_child_before_the_fork_point_and_runs_the_one_after_fresh(
    atide: AsyncTidebase,
) -> None:
    """The asyncio flavour: invoking the fork executes only the child after the fork point, as a new child run of the
    fork, and returns the source's result."""
    executed: Counter[str] = Counter()
    wf = aresearch(executed)
    assert await atide.run("research", wf, run_id="asrc") == EXPECTED
    source = await atide.runs.get("asrc")
    await atide.runs.fork("asrc", at_step="search", new_run_id="afork")
    executed.clear()
    assert await atide.run("research", wf, run_id="afork") == EXPECTED
    assert executed == Counter({"hotels": 1})
    fork = edges(await atide.runs.get("afork"))
    assert fork["flights"] == edges(source)["flights"]
    assert fork["hotels"] != edges(source)["hotels"]
    assert (await atide.runs.get(fork["hotels"])).parent_id == "afork"


def test_fork_of_a_fork_replays_inherited_and_own_children(tide: Tidebase) -> None:
    """A fork of a fork inherits both the children its source inherited and those its source ran: forked at the last
    step it executes no child step, forked between the children it runs only the second one."""
    executed: Counter[str] = Counter()
    wf = research(executed)
    tide.run("research", wf, run_id="src")
    tide.runs.fork("src", at_step="search", new_run_id="f1")
    tide.run("research", wf, run_id="f1")
    tide.runs.fork("f1", at_step="answer", new_run_id="f2")
    tide.runs.fork("f1", at_step="search", new_run_id="f3")
    executed.clear()
    assert tide.run("research", wf, run_id="f2") == EXPECTED
    assert executed == Counter()
    assert edges(tide.runs.get("f2")) == edges(tide.runs.get("f1"))
    assert tide.run("research", wf, run_id="f3") == EXPECTED
    assert executed == Counter({"hotels": 1})
    assert edges(tide.runs.get("f3"))["flights"] == edges(tide.runs.get("src"))["flights"]


def test_child_that_failed_before_the_fork_point_runs_fresh_in_the_fork(tide: Tidebase) -> None:
    """A child that had failed at the fork point (its parent went on) is not part of the fork's past: the fork runs
    it as a new child run, and the source's failed child stays as it was."""
    executed: Counter[str] = Counter()

    def flaky(run: Any, input: Any) -> Any:
        def work() -> str:
            executed["flaky"] += 1
            if executed["flaky"] == 1:
                raise RuntimeError("first try fails")
            return "ok"

        return run.step("work", work)

    def wf(run: Any, input: Any) -> Any:
        try:
            outcome = run.child("flaky", flaky, name="flaky")
        except RuntimeError:
            outcome = "failed"
        return [outcome, run.step("search", lambda: "docs")]

    assert tide.run("research", wf, run_id="src") == ["failed", "docs"]
    failed_child = edges(tide.runs.get("src"))["flaky"]
    tide.runs.fork("src", at_step="search", new_run_id="fork")
    assert tide.run("research", wf, run_id="fork") == ["ok", "docs"]
    assert executed == Counter({"flaky": 2})
    fresh = edges(tide.runs.get("fork"))["flaky"]
    assert fresh != failed_child and tide.runs.get(fresh).parent_id == "fork"
    assert tide.runs.get(failed_child).status == "failed"


async def test_child_still_running_at_the_fork_point_runs_fresh_in_the_fork(atide: AsyncTidebase) -> None:
    """A child started before the fork point that completes only after it (here: while the fork is taken) is not
    replayed: the fork runs it as a new child run, and never touches the source's."""
    executed: Counter[str] = Counter()
    started, searched, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(run: Any, input: Any) -> Any:
        async def work() -> str:
            executed["slow"] += 1
            started.set()
            await release.wait()
            return "slow notes"

        return await run.step("work", work)

    async def wf(run: Any, input: Any) -> Any:
        pending = asyncio.create_task(run.child("slow", slow, name="slow"))
        await started.wait()
        docs = await run.step("search", lambda: "docs")
        searched.set()
        return [await pending, docs]

    source = asyncio.create_task(atide.run("research", wf, run_id="src"))
    await asyncio.wait_for(searched.wait(), 30)
    await atide.runs.fork("src", at_step="search", new_run_id="fork")
    running_child = edges(await atide.runs.get("src"))["slow"]
    assert (await atide.runs.get(running_child)).status == "running"
    release.set()
    assert await asyncio.wait_for(source, 30) == ["slow notes", "docs"]
    started.clear()
    assert await atide.run("research", wf, run_id="fork") == ["slow notes", "docs"]
    assert executed == Counter({"slow": 2})
    fresh = edges(await atide.runs.get("fork"))["slow"]
    assert fresh != running_child and (await atide.runs.get(fresh)).parent_id == "fork"
    assert (await atide.runs.get(running_child)).attempt == 1


def test_fork_usage_with_children_counts_only_the_children_the_fork_ran(tide: Tidebase) -> None:
    """The usage of a fork with its children includes the child it ran, not the inherited child whose result it
    replayed (that spending is the source's)."""
    executed: Counter[str] = Counter()
    wf = research(executed)
    tide.run("research", wf, run_id="src")
    tide.runs.fork("src", at_step="search", new_run_id="fork")
    tide.run("research", wf, run_id="fork")
    fork = edges(tide.runs.get("fork"))
    report = tide.runs.usage("fork", include_children=True)
    assert set(report.run_ids) == {"fork", fork["hotels"]}
    assert report.spent_total.total_tokens == 15
    assert set(tide.runs.usage("src", include_children=True).run_ids) == {"src", *edges(tide.runs.get("src")).values()}


def test_fork_whose_child_input_changed_raises_child_conflict(tide: Tidebase) -> None:
    """A fork given another run input, from which a child before its fork point takes its own input, raises
    ChildConflict naming the source's child when it reaches that child, like a checkpoint with another input hash,
    and runs no child step."""
    executed: Counter[str] = Counter()
    child = kid(executed)

    def wf(run: Any, input: Any) -> Any:
        flights = run.child("kid", child, name="flights", input={"topic": input["topic"]})
        return [flights, run.step("search", lambda: "docs")]

    tide.run("research", wf, run_id="src", input={"topic": "flights"})
    source_child = edges(tide.runs.get("src"))["flights"]
    tide.runs.fork("src", at_step="search", new_run_id="fork", input={"topic": "trains"})
    executed.clear()
    with pytest.raises(ChildConflict) as info:
        tide.run("research", wf, run_id="fork", input={"topic": "trains"})
    assert info.value.child_run_id == source_child  # type: ignore[attr-defined]
    assert executed == Counter()


def test_a_fork_reports_the_usage_its_replayed_steps_saved(tide: Tidebase) -> None:
    """A step the fork copied from its source, replayed when the fork runs, reports the usage of its original
    execution as saved by the fork (as a resumed run does), while the fork spends nothing on it."""
    calls: Counter[str] = Counter()

    def agent(run: Any, input: Any) -> Any:
        def draft() -> str:
            calls["draft"] += 1
            run.usage.record(kind="llm", provider="acme", model="m-1", input_tokens=1200, output_tokens=420,
                             cost_usd=0.012)
            return "draft"

        text = run.step("draft", draft)
        return run.step("polish", text.upper)

    tide.run("writer", agent, run_id="src")
    fork = tide.runs.fork("src", at_step="draft")
    assert tide.run("writer", agent, run_id=fork.id) == "DRAFT"
    assert calls["draft"] == 1
    report = tide.runs.usage(fork.id)
    assert report.saved_total.records == 1 and report.saved_total.input_tokens == 1200
    assert report.spent_total.records == 0
    assert tide.runs.usage("src").saved_total.records == 0
