"""The upstream Tidebase server at `$TIDEBASE_URL`, driven by its published Python SDK (PyPI `tidebase` 0.7.0) in
its own virtualenv, through the SDK's public API only (`Tidebase(url=..., api_key=...)`, `tide.run`, `run.step`).

- executed step: `tide.run(...)` of a fresh run whose workflow calls `run.step(name, ...)` N times, each returning
  the ~200-byte dict at once. The server keys a run's checkpoints by step name (a name it has seen answers with the
  stored output), so the names are the keys Tidebase's library gives N calls of `run.step("s", ...)`: `s`, `s#2`,
  ... With this SDK a run is `POST /runs/{workflow}` and `POST /runs/{id}/begin`, then two requests per
  executed step (`steps/begin`, answered `execute`, then `steps/{id}/complete`), then `POST /runs/{id}/complete`:
  each request waits for its answer on a new connection (the SDK uses `urllib`), so a step counts as done when the
  server has answered its `complete` (how durable it is then is up to that server).
- resume: a run whose workflow completed k steps and then raised is failed by the SDK (`POST /runs/{id}/fail`);
  `tide.run(...)` is called again with its run id: `GET /runs/{id}`, `POST /runs/{id}/begin`, then one `steps/begin`
  per completed step, answered `return` with the stored output, then step k+1 executes.
- The server, and the PostgreSQL it writes to, are whatever `$TIDEBASE_URL` names (`$TIDEBASE_API_KEY` is sent as
  the SDK sends it); the `--dsn` database of the benchmark is not used.
- count: the SQL the server sends is out of reach (its connections are its own), so that part is reported as not
  applicable; the HTTP requests of the same operations are counted at a relay in this process (`HttpCounter`) when
  the URL is plain `http://`.
"""

from __future__ import annotations

import inspect
import os
import sys
from importlib.metadata import version
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

from _common import HttpCounter, ResumeResult, RunResult, count_through, main, step_output

from tidebase import Tidebase

WORKFLOW = "bench"
URL_ENV = "TIDEBASE_URL"
SQL_NOT_APPLICABLE = ("the SDK talks HTTP to a server that holds its own PostgreSQL connections, so no relay in the "
                      "benchmark's processes sees its SQL round trips or statements")
HTTPS_NOT_COUNTED = ("the server's URL is https://: a relay in front of it would fail the SDK's certificate check, "
                     "so its HTTP requests are not counted either")


def step_key(i: int) -> str:
    """The key Tidebase's library gives the (i+1)-th `run.step("s", ...)` of a run."""
    return "s" if i == 0 else f"s#{i + 1}"


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
            run.step(step_key(i), lambda i=i: step_output(i))
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
            run.step(step_key(i), lambda i=i: step_output(i))
        if self.fail:
            raise PlannedFailure
        self.reached = perf_counter()
        run.step(step_key(self.k), lambda: step_output(self.k))
        return "done"


def server_url() -> str:
    url = os.environ.get(URL_ENV, "").strip()
    if not url:
        raise SystemExit(f"${URL_ENV} is not set: it names the upstream server this script measures")
    return url


class UpstreamSystem:
    """One SDK client per process; the SDK keeps no connection open, so there is nothing to warm but the server."""

    def __init__(self, url: str) -> None:
        if "url" not in inspect.signature(Tidebase).parameters:
            raise SystemExit("`import tidebase` found this project's library, not the upstream HTTP SDK: run this "
                             "script from the upstream virtualenv (bench/venvs.py)")
        self.tide = Tidebase(url=url, api_key=os.environ.get("TIDEBASE_API_KEY") or None)

    def run(self, steps: int, deadline: float | None = None) -> RunResult:
        workflow = Steps(deadline)
        started = perf_counter()
        self.tide.run(WORKFLOW, workflow, input={"n": steps})
        return RunResult(started, perf_counter(), workflow.completed)

    def prepare_failed(self, k: int) -> Any:
        workflow = Resumable(k)
        run_id = self.tide.runs.create(WORKFLOW, input={"k": k})["id"]
        try:
            self.tide.run(WORKFLOW, workflow, run_id=run_id)
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
        return


def upstream(_dsn: str) -> UpstreamSystem:
    """The system for the timed tasks: the server at `$TIDEBASE_URL` (the benchmark database's URL is not used)."""
    return UpstreamSystem(server_url())


def task_count(_factory: Any, _dsn: str, params: dict[str, Any]) -> dict[str, Any]:
    """SQL: not applicable (see SQL_NOT_APPLICABLE). HTTP requests: the operations of the other systems' `count`
    task, through a relay in front of the server, when its URL is plain http://."""
    url = server_url()
    if urlsplit(url).scheme != "http":
        return {"not_applicable": SQL_NOT_APPLICABLE, "http": None, "http_not_counted": HTTPS_NOT_COUNTED}
    return {"not_applicable": SQL_NOT_APPLICABLE, "http": count_through(HttpCounter(url), UpstreamSystem, params)}


def versions() -> dict[str, str]:
    return {"tidebase (SDK)": version("tidebase"), "python": sys.version.split()[0]}


if __name__ == "__main__":
    sys.exit(main(upstream, versions, {"count": task_count}))
