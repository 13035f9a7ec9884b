"""Tidebase, from the main virtualenv (the working tree, installed editable).

- executed step: `tide.run(...)` of a fresh run whose workflow calls `run.step("s", ...)` N times (keys `s`, `s#2`,
  ...), each returning the ~200-byte dict at once; one `Tidebase` instance (its pool kept open) per process.
- resume: a run whose workflow completed k steps and then raised is failed; `tide.run(...)` is called again with
  the same run id: it takes the lease and loads every checkpoint, then the workflow replays the k steps from
  memory and executes step k+1.
"""

from __future__ import annotations

import sys
from time import perf_counter
from typing import Any

import psycopg
from _common import ResumeResult, RunResult, fresh_id, main, step_output

import tidebase
from tidebase import Tidebase

WORKFLOW = "bench"


class PlannedFailure(Exception):
    """Raised after k steps on a run's first invocation, to leave a failed run with k checkpoints."""


class Steps:
    """Workflow of `input["n"]` steps; records when each step returned and stops once `deadline` has passed."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.completed: list[float] = []

    def __call__(self, run: Any, input: dict[str, Any]) -> str:
        for i in range(input["n"]):
            if self.deadline is not None and perf_counter() > self.deadline:
                break
            run.step("s", lambda i=i: step_output(i))
            self.completed.append(perf_counter())
        return "done"


class Resumable:
    """Workflow of k + 1 steps that raises before step k + 1 while `fail` is set; otherwise records when its code
    is entered and when it reaches step k + 1 (after replaying k checkpoints), then executes that step."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.fail = True
        self.entered = self.reached = 0.0

    def __call__(self, run: Any, input: Any) -> str:
        self.entered = perf_counter()
        for i in range(self.k):
            run.step("s", lambda i=i: step_output(i))
        if self.fail:
            raise PlannedFailure
        self.reached = perf_counter()
        run.step("s", lambda: step_output(self.k))
        return "done"


class TidebaseSystem:
    def __init__(self, dsn: str) -> None:
        self.tide = Tidebase(dsn)

    def run(self, steps: int, deadline: float | None = None) -> RunResult:
        workflow = Steps(deadline)
        started = perf_counter()
        self.tide.run(WORKFLOW, workflow, run_id=fresh_id("exec"), input={"n": steps})
        return RunResult(started, perf_counter(), workflow.completed)

    def prepare_failed(self, k: int) -> Any:
        workflow, run_id = Resumable(k), fresh_id("resume")
        try:
            self.tide.run(WORKFLOW, workflow, run_id=run_id, input={"k": k})
        except PlannedFailure:
            workflow.fail = False
            return run_id, workflow
        raise RuntimeError("the resumable workflow was expected to fail on its first invocation")

    def resume(self, handle: Any) -> ResumeResult:
        run_id, workflow = handle
        start = perf_counter()
        self.tide.run(WORKFLOW, workflow, run_id=run_id)
        return ResumeResult(workflow.reached - start, workflow.entered - start)

    def close(self) -> None:
        self.tide.close()


def versions() -> dict[str, str]:
    return {"tidebase": tidebase.__version__, "psycopg": psycopg.__version__, "python": sys.version.split()[0]}


if __name__ == "__main__":
    sys.exit(main(TidebaseSystem, versions))
