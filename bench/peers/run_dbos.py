"""DBOS Transact (`dbos` from PyPI), in its own virtualenv, with its system database on the benchmark's database.

- executed step: a `@DBOS.workflow()` calling a `@DBOS.step()` N times, each returning the ~200-byte dict at once;
  DBOS is configured and launched once per process (`system_database_url` = the benchmark database, schema `dbos`).
- resume: in DBOS an exception that leaves a workflow is its final outcome (status ERROR, never re-executed), so
  the failure measured is a crash: a child process (own `executor_id`) runs the workflow, and its process exits
  after k completed steps, leaving the workflow PENDING. The measuring process, already launched, calls
  `DBOS.resume_workflow(workflow_id)`: the workflow is put on DBOS's internal queue, a queue worker of this process
  dequeues it and runs it again under the same id; its k steps return their recorded outputs, and step k+1 runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from importlib.metadata import version
from time import perf_counter
from typing import Any

from _common import ResumeResult, RunResult, fresh_id, main, step_output, wait_for
from dbos import DBOS, DBOSConfig, SetWorkflowID

CRASH_EXIT = 17
_state: dict[str, Any] = {"crash": False, "deadline": None, "completed": []}
_marks: dict[str, dict[str, Any]] = {}  # workflow id -> {"entered": t, "reached": t, "event": Event, "done": Event}


@DBOS.step()
def bench_step(i: int) -> dict[str, Any]:
    return step_output(i)


@DBOS.workflow()
def bench_steps(n: int) -> str:
    """N steps; records when each step returned and stops once the deadline has passed."""
    deadline, completed = _state["deadline"], _state["completed"]
    for i in range(n):
        if deadline is not None and perf_counter() > deadline:
            break
        bench_step(i)
        completed.append(perf_counter())
    return "done"


@DBOS.workflow()
def resumable(k: int) -> str:
    """k + 1 steps. In a crash-prep process, the process exits before step k + 1; when resumed, it records when its
    code is entered and when it reaches step k + 1, then executes that step."""
    marks = _marks.get(DBOS.workflow_id or "", {})
    marks["entered"] = perf_counter()
    for i in range(k):
        bench_step(i)
    if _state["crash"]:
        os._exit(CRASH_EXIT)
    marks["reached"] = perf_counter()
    if "event" in marks:
        marks["event"].set()
    bench_step(k)
    return "done"


def config(dsn: str, executor_id: str) -> DBOSConfig:
    """Every process gets its own `executor_id`: DBOS recovers, at launch, the PENDING workflows of its executor id,
    and would otherwise take over the workflows that concurrent benchmark processes are running."""
    return {"name": "tidebase-bench", "system_database_url": dsn, "application_version": "bench",
            "executor_id": executor_id, "log_level": "WARNING"}


class DBOSSystem:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        DBOS(config=config(dsn, executor_id=f"bench-{os.getpid()}"))
        DBOS.launch()

    def run(self, steps: int, deadline: float | None = None) -> RunResult:
        _state["deadline"], _state["completed"] = deadline, []
        started = perf_counter()
        bench_steps(steps)
        return RunResult(started, perf_counter(), _state["completed"])

    def prepare_failed(self, k: int) -> Any:
        workflow_id = fresh_id("dbos")
        command = [sys.executable, __file__, "crash-prep", "--dsn", self.dsn,
                   "--params", json.dumps({"k": k, "workflow_id": workflow_id})]
        done = subprocess.run(command, stdout=subprocess.DEVNULL, check=False, timeout=300)
        if done.returncode != CRASH_EXIT:
            raise RuntimeError(f"the crash-prep process exited with {done.returncode}, not {CRASH_EXIT}")
        return workflow_id

    def resume(self, handle: Any) -> ResumeResult:
        marks: dict[str, Any] = {"event": threading.Event()}
        _marks[handle] = marks
        start = perf_counter()
        workflow = DBOS.resume_workflow(handle)
        wait_for(marks["event"], "the resumed DBOS workflow to reach its next step")
        workflow.get_result(polling_interval_sec=0.005)
        del _marks[handle]
        return ResumeResult(marks["reached"] - start, marks["entered"] - start)

    def close(self) -> None:
        DBOS.destroy()


def crash_prep(factory: Any, dsn: str, params: dict[str, Any]) -> dict[str, Any]:
    """Runs `resumable(k)` under the given workflow id in a fresh DBOS process that exits after k steps."""
    _state["crash"] = True
    DBOS(config=config(dsn, executor_id=f"prep-{params['workflow_id']}"))
    DBOS.launch()
    with SetWorkflowID(params["workflow_id"]):
        resumable(params["k"])
    raise RuntimeError("the crash-prep workflow was expected to end its process")


def versions() -> dict[str, str]:
    return {name: version(name) for name in ("dbos", "sqlalchemy", "psycopg")} | {"python": sys.version.split()[0]}


if __name__ == "__main__":
    sys.exit(main(DBOSSystem, versions, {"crash-prep": crash_prep}))
