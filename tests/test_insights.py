"""`tide.insights`, `tide.queues.list` and `tide.schedules.pause/resume`: the public reads behind the Studio, so that
whatever the Studio shows can be read in Python too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tidebase import InvalidArgument, NotFound, Tidebase


def test_counts_workflows_and_pulse(tide: Tidebase) -> None:
    """Counts cover every status, workflows come distinct and sorted, and a pulse names each run's current step."""
    tide.run("beta", lambda run, _: run.step("only", lambda: 1), run_id="b-1")
    tide.enqueue("alpha", run_id="a-1")
    counts = tide.insights.status_counts()
    assert counts["completed"] == 1 and counts["queued"] == 1 and counts["failed"] == 0
    assert tide.insights.workflows() == ["alpha", "beta"]
    pulses = {p.id: p for p in tide.insights.pulse(["b-1", "a-1", "missing"])}
    assert set(pulses) == {"b-1", "a-1"}
    assert (pulses["b-1"].step_key, pulses["b-1"].step_event) == ("only", "step.completed")
    assert pulses["a-1"].step_key is None
    with pytest.raises(InvalidArgument):
        tide.insights.pulse([f"r{i}" for i in range(1001)])


def test_overview_steps_pages_and_replayed(tide: Tidebase) -> None:
    """The overview counts steps and events and links children; steps come in pages; a step completed before the
    current attempt began is reported replayed."""
    crash = [True]

    def child(run: Any, _: Any) -> int:
        return int(run.step("c", lambda: 7))

    def workflow(run: Any, _: Any) -> int:
        for i in range(5):
            run.step("loop", lambda i=i: i)
        if crash[0]:
            crash[0] = False
            raise RuntimeError("once")
        return int(run.child("kid", child, name="k"))

    with pytest.raises(RuntimeError):
        tide.run("parent", workflow, run_id="p-1")
    assert tide.run("parent", workflow, run_id="p-1") == 7
    ov = tide.insights.overview("p-1")
    assert (ov.run.status, ov.step_count, ov.run.attempt) == ("completed", 5, 2)
    assert ov.event_count == len(tide.runs.events("p-1"))
    [link] = ov.children
    assert (link.edge.name, link.workflow, link.status) == ("k", "kid", "completed")
    assert [p.run_id for p in tide.insights.overview(link.run_id).parents] == ["p-1"]
    page = tide.insights.steps("p-1", offset=3, limit=10)
    assert [s.key for s in page] == ["loop#4", "loop#5"]
    assert all(ov.replayed(s) for s in tide.insights.steps("p-1"))
    assert tide.insights.step("p-1", "loop#2").output == 1
    with pytest.raises(NotFound):
        tide.insights.overview("nope")
    with pytest.raises(NotFound):
        tide.insights.step("p-1", "nope")


def test_events_streams_versions_snapshots_and_step_usage(tide: Tidebase) -> None:
    """Recent events come in seq order; versions newest first below a version; usage is summed per step, spent and
    saved by replay."""
    crash = [True]

    def workflow(run: Any, _: Any) -> None:
        def think() -> str:
            run.usage.record(kind="llm", input_tokens=10, output_tokens=5, cost_usd=0.5)
            return "t"

        run.step("think", think)
        for v in range(3):
            run.state.set({"v": v})
        run.state.save("last")
        if crash[0]:
            crash[0] = False
            raise RuntimeError("again")

    with pytest.raises(RuntimeError):
        tide.run("w", workflow, run_id="s-1")
    tide.run("w", workflow, run_id="s-1")
    events = tide.insights.recent_events("s-1", limit=3)
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + 3))
    assert events[-1].type == "run.completed"
    [stream] = tide.insights.streams("s-1")
    assert (stream.name, stream.value) == ("run", {"v": 2})
    assert [v.version for v in tide.insights.versions("s-1", before=stream.version, limit=2)] == [
        stream.version - 1, stream.version - 2]
    assert {v.label for v in tide.insights.snapshots("s-1")} == {"last"}
    [usage] = tide.insights.step_usage("s-1")
    assert (usage.step_key, usage.spent.total_tokens, usage.saved.total_tokens) == ("think", 15, 15)
    assert usage.spent.cost_usd == usage.saved.cost_usd == 0.5


def test_decisions_and_usage_by_day(tide: Tidebase, db: psycopg.Connection[Any]) -> None:
    """Decisions list resolved gates newest first with who decided; usage is summed per UTC day and workflow."""

    def asks(run: Any, _: Any) -> None:
        run.usage.record(kind="llm", total_tokens=100, cost_usd=1)
        run.gate("ok", prompt="ok?", suspend=True)

    for run_id in ("g-1", "g-2"):
        with pytest.raises(Exception, match="suspended"):
            tide.run("asker", asks, run_id=run_id)
    for run_id, actor in (("g-1", "ann"), ("g-2", "ben")):
        [gate] = tide.gates.list(status="pending", run_id=run_id)
        tide.gates.resolve(gate.id, "approved", actor=actor)
    assert [g.actor for g in tide.insights.decisions()] == ["ben", "ann"]
    db.execute("UPDATE tidebase.usage SET created_at = created_at - interval '1 day' WHERE run_id = 'g-1'")
    days = tide.insights.usage_by_day(3)
    assert len(days) == 2 and {d.workflow for d in days} == {"asker"}
    assert sorted(d.day for d in days) == [d.day for d in days]
    assert all(d.spent.total_tokens == 100 for d in days)
    assert tide.insights.usage_by_day(1, now=datetime.now(UTC) + timedelta(days=30)) == []


def test_queues_list_and_schedule_pause_resume(tide: Tidebase, db: psycopg.Connection[Any]) -> None:
    """Queues with runs or a config are listed with caps and counts; a paused schedule does not fire, and resuming
    moves its next fire after now instead of recording the paused ones as missed."""
    tide.queues.configure("mail", concurrency=2, rate_limit=5, rate_window=60)
    tide.enqueue("send", queue="mail")
    tide.enqueue("crunch", queue="batch")
    queues = {q.queue: q for q in tide.queues.list()}
    assert (queues["mail"].concurrency, queues["mail"].rate_limit, queues["mail"].queued) == (2, 5, 1)
    assert (queues["batch"].concurrency, queues["batch"].queued) == (None, 1)
    tide.schedules.set("hourly", cron="0 * * * *", workflow="w")
    assert tide.schedules.pause("hourly").enabled is False
    db.execute("UPDATE tidebase.schedules SET next_fire_at = now() - interval '3 hours' WHERE name = 'hourly'")
    resumed = tide.schedules.resume("hourly")
    assert resumed.enabled and resumed.next_fire_at > datetime.now(UTC) - timedelta(seconds=5)
    with pytest.raises(NotFound):
        tide.schedules.pause("nope")
