"""Usage ledger, snapshots, time travel and forks against real Postgres (async source of test_ledger.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tidebase import InvalidArgument, NotFound, Tidebase


class Crash(Exception):
    """A failure after some steps completed."""


def test_usage_is_recorded_with_totals_and_step(tide: Tidebase) -> None:
    """Usage records carry run and step; totals group by kind/provider/model; total_tokens is derived."""

    def wf(run: Any, input: Any) -> Any:
        def answer() -> str:
            run.usage.record(kind="llm", provider="openai", model="gpt-4.1-mini", input_tokens=1200,
                                   output_tokens=420, cost_usd=0.012)
            return "answer"

        run.step("answer", answer)
        run.usage.record(kind="tool", provider="search", quantity=3, unit="queries", cost_usd=0.003,
                               label="web")
        return None

    tide.run("w", wf, run_id="u-1")
    report = tide.runs.usage("u-1")
    llm = next(r for r in report.records if r.kind == "llm")
    assert (llm.step_key, llm.total_tokens, llm.saved) == ("answer", 1620, False)
    assert report.spent[("llm", "openai", "gpt-4.1-mini")].total_tokens == 1620
    assert report.spent_total.cost_usd == Decimal("0.015")
    assert report.saved == {}
    assert [e.type for e in tide.runs.events("u-1")].count("usage.recorded") == 2


def test_replayed_step_reports_the_usage_it_saved(tide: Tidebase) -> None:
    """A step served from its checkpoint on resume records its original usage as saved, so the ledger shows both
    what was spent and what replay avoided."""
    fail = [True]

    def wf(run: Any, input: Any) -> Any:
        def expensive() -> str:
            run.usage.record(kind="llm", provider="p", model="m", input_tokens=1000, output_tokens=500,
                                   cost_usd=0.5)
            return "summary"

        summary = run.step("summarize", expensive)
        if fail[0]:
            fail[0] = False
            raise Crash("after the expensive step")
        return summary

    with pytest.raises(Crash):
        tide.run("w", wf, run_id="u-2")
    assert tide.run("w", wf, run_id="u-2") == "summary"
    report = tide.runs.usage("u-2")
    assert report.spent_total.total_tokens == 1500 and report.spent_total.cost_usd == Decimal("0.5")
    assert report.saved_total.total_tokens == 1500 and report.saved_total.records == 1
    assert report.saved[("llm", "p", "m")].cost_usd == Decimal("0.5")


def test_bad_usage_is_refused_before_writing(tide: Tidebase, db: psycopg.Connection[Any]) -> None:
    """Negative or fractional token counts and negative costs raise InvalidArgument and store nothing."""

    def wf(run: Any, input: Any) -> Any:
        for bad in ({"input_tokens": -1}, {"output_tokens": 1.5}, {"cost_usd": -0.1}):
            with pytest.raises(InvalidArgument):
                run.usage.record(kind="llm", **bad)
        return None

    tide.run("w", wf, run_id="u-3")
    assert db.execute("SELECT count(*) FROM tidebase.usage WHERE run_id = 'u-3'").fetchone() == (0,)
    with pytest.raises(NotFound):
        tide.runs.usage("missing")


def test_snapshots_are_labelled_versions_of_a_target_stream(tide: Tidebase) -> None:
    """A snapshot stores a labelled milestone version in stream "<type>:<id>"; list shows every label, newest first."""

    def wf(run: Any, input: Any) -> Any:
        run.state.set({"draft": 1})
        run.state.save("draft-done")
        run.snapshots.create("v1", state={"title": "Report"}, target={"type": "report", "id": "r9"},
                                   reason="first cut")
        return [(v.stream, v.label, v.importance) for v in run.snapshots.list()]

    listed = tide.run("w", wf, run_id="sn-1")
    assert listed == [["report:r9", "v1", "milestone"], ["run", "draft-done", "milestone"]]
    assert [e.type for e in tide.runs.events("sn-1")][-2] == "snapshot.created"


def test_state_at_reads_old_versions_by_version_label_or_step(tide: Tidebase) -> None:
    """Time travel: the state as it was at a version, at a label, or when a step completed."""

    def wf(run: Any, input: Any) -> Any:
        run.state.set({"stage": "plan"})
        run.step("plan", lambda: 1)
        run.state.patch({"stage": "search"})
        run.state.save("searched")
        run.state.set({"stage": "done"})
        return None

    tide.run("w", wf, run_id="tt-1")
    assert (tide.runs.state_at("tt-1", version=1)).value == {"stage": "plan"}
    assert (tide.runs.state_at("tt-1", label="searched")).value == {"stage": "search"}
    assert (tide.runs.state_at("tt-1", step="plan")).value == {"stage": "plan"}
    with pytest.raises(NotFound):
        tide.runs.state_at("tt-1", version=99)
    with pytest.raises(InvalidArgument):
        tide.runs.state_at("tt-1", version=1, label="searched")


def test_fork_replays_up_to_the_step_and_runs_the_rest_fresh(tide: Tidebase) -> None:
    """A fork reuses the source's checkpoints up to and including `at_step` (with the state of that moment), executes
    the rest fresh, records a fork edge, and leaves the source run unchanged."""
    executed: list[str] = []
    model = ["small"]

    def wf(run: Any, input: Any) -> Any:
        plan = run.step("plan", lambda: executed.append("plan") or "plan")
        run.state.set({"after": "plan"})
        docs = run.step("search", lambda: executed.append("search") or "docs")
        run.state.set({"after": "search"})
        m = model[0]
        answer = run.step("answer", lambda: executed.append(f"answer:{m}") or f"answer by {m}")
        return [plan, docs, answer]

    assert tide.run("research", wf, run_id="src-1") == ["plan", "docs", "answer by small"]
    source_before = tide.runs.get("src-1")
    fork = tide.runs.fork("src-1", at_step="search", new_run_id="fork-1")
    assert fork.status == "pending" and fork.metadata["forkedFrom"] == "src-1"
    assert (tide.runs.state_at("fork-1", version=1)).value == {"after": "plan"}
    with pytest.raises(NotFound):  # written after `search` completed: not part of the fork
        tide.runs.state_at("fork-1", version=2)
    executed.clear()
    model[0] = "large"
    assert tide.run("research", wf, run_id="fork-1") == ["plan", "docs", "answer by large"]
    assert executed == ["answer:large"]
    source_after = tide.runs.get("src-1")
    assert source_after.steps == source_before.steps and source_after.updated_at == source_before.updated_at
    assert [(e.edge_type, e.child_run_id) for e in source_after.children] == [("fork", "fork-1")]
    with pytest.raises(NotFound):
        tide.runs.fork("src-1", at_step="no-such-step")
