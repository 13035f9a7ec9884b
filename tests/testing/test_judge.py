"""The crash-test kit's verdicts without a database: what one boundary's observations amount to (`_probe.judge`),
and which boundaries a run has."""

from __future__ import annotations

from typing import Any

from tidebase.core.rules import ResumeContract
from tidebase.testing._probe import AFTER_COMMIT, BEFORE_COMMIT, Boundary, boundaries, judge, same_result

STEPS = ("plan", "charge")


def verdict(boundary: Boundary, **observed: Any) -> tuple[str, ...]:
    seen: dict[str, Any] = {"outcome": "resumed", "run_id": "r-1", "result": {"ok": True},
                            "executions": {"plan": 1, "charge": 1}, "completed": STEPS, "interrupted": {},
                            "parked": None, "released": set(), "errors": [], **observed}
    return judge(boundary, baseline_result={"ok": True}, baseline_run_id="r-0", baseline_steps=STEPS,
                 baseline_executions={"plan": 1, "charge": 1}, **seen)


def test_a_completed_step_executed_again_is_a_problem_naming_it() -> None:
    """A step whose function ran twice although the crash did not interrupt it breaks exactly-once."""
    problems = verdict(Boundary(1, "plan", AFTER_COMMIT), executions={"plan": 2, "charge": 1})

    assert problems == ("step 'plan' executed 2 times (at most 1 allowed)",)


def test_an_interrupted_step_may_run_again_only_when_its_contract_or_an_operator_allows() -> None:
    """Twice is allowed for an interrupted pure or keyed step, or a released one; not for an unkeyed effect."""
    boundary = Boundary(2, "charge", BEFORE_COMMIT)
    twice = {"plan": 1, "charge": 2}

    assert verdict(boundary, executions=twice, interrupted={"charge": "auto"}) == ()
    assert verdict(boundary, executions=twice, interrupted={"charge": "manual"}, released={"charge"}) == ()
    assert verdict(boundary, executions=twice, interrupted={"charge": "manual"}) == (
        "step 'charge' executed 2 times (at most 1 allowed)",)


def test_parking_is_expected_only_for_an_interrupted_step_that_forbids_a_re_run() -> None:
    """A park at an interrupted unkeyed effect is its contract; a park at a step whose contract re-runs it is not."""
    boundary = Boundary(2, "charge", BEFORE_COMMIT)

    assert verdict(boundary, outcome="parked", parked="charge", interrupted={"charge": "manual"},
                   completed=("plan",)) == ()
    assert verdict(boundary, outcome="parked", parked="charge", interrupted={"charge": "auto"},
                   completed=("plan",)) == (
        "the run was parked for review at step 'charge', whose contract re-runs it",)


def test_a_resumed_run_must_match_the_uninterrupted_one_up_to_its_own_run_id() -> None:
    """Results compare equal when they differ only by each run's own id (an idempotency key made of it); another
    result, or other steps, are problems."""
    assert same_result({"key": "r-1:call"}, "r-1", {"key": "r-0:call"}, "r-0")
    assert not same_result({"key": "r-1:call"}, "r-1", {"key": "r-0:other"}, "r-0")
    problems = verdict(Boundary(1, "plan", AFTER_COMMIT), result={"ok": False}, completed=("plan", "charge#2"))

    assert problems[0] == "the resumed run returned {'ok': False}, the uninterrupted run {'ok': True}"
    assert "missing ['charge'], extra ['charge#2']" in problems[1]


def test_a_step_gets_a_boundary_after_its_commit_and_one_before_when_it_writes_a_marker() -> None:
    """Pure steps have one crash point; side effects (and non-auto replay modes) have a second, mid-flight."""
    pure, effect = ResumeContract.build((), None, None), ResumeContract.build(["payments.charge"], None, None)

    assert boundaries([("plan", pure), ("charge", effect)]) == [
        Boundary(1, "plan", AFTER_COMMIT), Boundary(2, "charge", AFTER_COMMIT), Boundary(2, "charge", BEFORE_COMMIT)]
