"""What the integration tests assert about side effects the tools count themselves, per run, beside the kit."""

from __future__ import annotations

from collections import Counter

from tidebase.integrations import current_run
from tidebase.testing import CrashReport


def count_call(calls: Counter[tuple[str, str]], tool: str) -> str:
    """Counts one call of `tool` in the run it is called for; returns that run's id."""
    run = current_run()
    assert run is not None, "a durable tool runs inside its workflow's run"
    calls[(tool, run.run_id)] += 1
    return run.run_id


def assert_each_run_called(report: CrashReport, calls: Counter[tuple[str, str]], what: str, times: int) -> None:
    """`what` (e.g. the model) was called exactly `times` times for the uninterrupted run and for each crashed and
    resumed run, over both of its invocations: never repeated after a crash, never skipped."""
    per_run = {run_id: calls[(what, run_id)] for run_id in (report.run_id, *(o.run_id for o in report.outcomes))}
    assert per_run == dict.fromkeys(per_run, times), f"{what} calls per run: {per_run}"


def assert_effects_within_contracts(report: CrashReport, calls: Counter[tuple[str, str]], keys: dict[str, str]) -> None:
    """Each tool (by name, with its step key) took effect once in the uninterrupted run and at least once in every
    resumed run, and never more than its contract allows: twice only where the crash interrupted it and the contract
    re-runs it (what the tools count independently of the kit's own hook)."""
    for tool, key in keys.items():
        assert calls[(tool, report.run_id)] == 1, f"{tool} in the uninterrupted run"
        for o in report.outcomes:
            allowed = 2 if o.interrupted.get(key) == "auto" else 1
            assert calls[(tool, o.run_id)] <= allowed, f"{tool} at {o.boundary}: {calls[(tool, o.run_id)]} calls"
            if o.outcome == "resumed":
                assert calls[(tool, o.run_id)] >= 1, f"{tool} never ran at {o.boundary}"
