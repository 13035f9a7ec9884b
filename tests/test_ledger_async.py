"""Usage ledger, snapshots, time travel and forks against real Postgres (async source of test_ledger.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tidebase import InvalidArgument, NotFound
from tidebase.aio import AsyncTidebase


class Crash(Exception):
    """A failure after some steps completed."""


async def test_usage_is_recorded_with_totals_and_step(atide: AsyncTidebase) -> None:
    """Usage records carry run and step; totals group by kind/provider/model; total_tokens is derived."""

    async def wf(run: Any, input: Any) -> Any:
        async def answer() -> str:
            await run.usage.record(kind="llm", provider="openai", model="gpt-4.1-mini", input_tokens=1200,
                                   output_tokens=420, cost_usd=0.012)
            return "answer"

        await run.step("answer", answer)
        await run.usage.record(kind="tool", provider="search", quantity=3, unit="queries", cost_usd=0.003,
                               label="web")
        return None

    await atide.run("w", wf, run_id="u-1")
    report = await atide.runs.usage("u-1")
    llm = next(r for r in report.records if r.kind == "llm")
    assert (llm.step_key, llm.total_tokens, llm.saved) == ("answer", 1620, False)
    assert report.spent[("llm", "openai", "gpt-4.1-mini")].total_tokens == 1620
    assert report.spent_total.cost_usd == Decimal("0.015")
    assert report.saved == {}
    assert [e.type for e in await atide.runs.events("u-1")].count("usage.recorded") == 2


async def test_replayed_step_reports_the_usage_it_saved(atide: AsyncTidebase) -> None:
    """A step served from its checkpoint on resume records its original usage as saved, so the ledger shows both
    what was spent and what replay avoided."""
    fail = [True]

    async def wf(run: Any, input: Any) -> Any:
        async def expensive() -> str:
            await run.usage.record(kind="llm", provider="p", model="m", input_tokens=1000, output_tokens=500,
                                   cost_usd=0.5)
            return "summary"

        summary = await run.step("summarize", expensive)
        if fail[0]:
            fail[0] = False
            raise Crash("after the expensive step")
        return summary

    with pytest.raises(Crash):
        await atide.run("w", wf, run_id="u-2")
    assert await atide.run("w", wf, run_id="u-2") == "summary"
    report = await atide.runs.usage("u-2")
    assert report.spent_total.total_tokens == 1500 and report.spent_total.cost_usd == Decimal("0.5")
    assert report.saved_total.total_tokens == 1500 and report.saved_total.records == 1
    assert report.saved[("llm", "p", "m")].cost_usd == Decimal("0.5")


async def test_bad_usage_is_refused_before_writing(atide: AsyncTidebase, db: psycopg.Connection[Any]) -> None:
    """Negative or fractional token counts and negative costs raise InvalidArgument and store nothing."""

    async def wf(run: Any, input: Any) -> Any:
        for bad in ({"input_tokens": -1}, {"output_tokens": 1.5}, {"cost_usd": -0.1}):
            with pytest.raises(InvalidArgument):
                await run.usage.record(kind="llm", **bad)
        return None

    await atide.run("w", wf, run_id="u-3")
    assert db.execute("SELECT count(*) FROM tidebase.usage WHERE run_id = 'u-3'").fetchone() == (0,)
    with pytest.raises(NotFound):
        await atide.runs.usage("missing")


async def test_snapshots_are_labelled_versions_of_a_target_stream(atide: AsyncTidebase) -> None:
    """A snapshot stores a labelled milestone version in stream "<type>:<id>"; list shows every label, newest first."""

    async def wf(run: Any, input: Any) -> Any:
        await run.state.set({"draft": 1})
        await run.state.save("draft-done")
        await run.snapshots.create("v1", state={"title": "Report"}, target={"type": "report", "id": "r9"},
                                   reason="first cut")
        return [(v.stream, v.label, v.importance) for v in await run.snapshots.list()]

    listed = await atide.run("w", wf, run_id="sn-1")
    assert listed == [["report:r9", "v1", "milestone"], ["run", "draft-done", "milestone"]]
    assert [e.type for e in await atide.runs.events("sn-1")][-2] == "snapshot.created"


async def test_state_at_reads_old_versions_by_version_label_or_step(atide: AsyncTidebase) -> None:
    """Time travel: the state as it was at a version, at a label, or when a step completed."""

    async def wf(run: Any, input: Any) -> Any:
        await run.state.set({"stage": "plan"})
        await run.step("plan", lambda: 1)
        await run.state.patch({"stage": "search"})
        await run.state.save("searched")
        await run.state.set({"stage": "done"})
        return None

    await atide.run("w", wf, run_id="tt-1")
    assert (await atide.runs.state_at("tt-1", version=1)).value == {"stage": "plan"}
    assert (await atide.runs.state_at("tt-1", label="searched")).value == {"stage": "search"}
    assert (await atide.runs.state_at("tt-1", step="plan")).value == {"stage": "plan"}
    with pytest.raises(NotFound):
        await atide.runs.state_at("tt-1", version=99)
    with pytest.raises(InvalidArgument):
        await atide.runs.state_at("tt-1", version=1, label="searched")


async def test_fork_replays_up_to_the_step_and_runs_the_rest_fresh(atide: AsyncTidebase) -> None:
    """A fork reuses the source's checkpoints up to and including `at_step` (with the state of that moment), executes
    the rest fresh, records a fork edge, and leaves the source run unchanged."""
    executed: list[str] = []
    model = ["small"]

    async def wf(run: Any, input: Any) -> Any:
        plan = await run.step("plan", lambda: executed.append("plan") or "plan")
        await run.state.set({"after": "plan"})
        docs = await run.step("search", lambda: executed.append("search") or "docs")
        await run.state.set({"after": "search"})
        m = model[0]
        answer = await run.step("answer", lambda: executed.append(f"answer:{m}") or f"answer by {m}")
        return [plan, docs, answer]

    assert await atide.run("research", wf, run_id="src-1") == ["plan", "docs", "answer by small"]
    source_before = await atide.runs.get("src-1")
    fork = await atide.runs.fork("src-1", at_step="search", new_run_id="fork-1")
    assert fork.status == "pending" and fork.metadata["forkedFrom"] == "src-1"
    assert (await atide.runs.state_at("fork-1", version=1)).value == {"after": "plan"}
    with pytest.raises(NotFound):  # written after `search` completed: not part of the fork
        await atide.runs.state_at("fork-1", version=2)
    executed.clear()
    model[0] = "large"
    assert await atide.run("research", wf, run_id="fork-1") == ["plan", "docs", "answer by large"]
    assert executed == ["answer:large"]
    source_after = await atide.runs.get("src-1")
    assert source_after.steps == source_before.steps and source_after.updated_at == source_before.updated_at
    assert [(e.edge_type, e.child_run_id) for e in source_after.children] == [("fork", "fork-1")]
    with pytest.raises(NotFound):
        await atide.runs.fork("src-1", at_step="no-such-step")
