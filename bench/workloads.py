"""The measured workloads: the raw psycopg floor, Tidebase executed steps (sync and asyncio), and replay.

Every function here measures one thing on one database and returns raw seconds; `bench.core` interleaves them into
rounds and `bench.report` prints them. Clocks: `time.perf_counter` for wall time, `time.process_time` for this
process's CPU time (all threads).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from time import perf_counter, process_time
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tidebase import Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.sql import load_queries

WORKFLOW = "bench"
FLOOR_TABLE = "bench_floor"
PAYLOAD_CHARS = 180

_CREATE_FLOOR = f"CREATE TABLE IF NOT EXISTS {FLOOR_TABLE} (id bigserial PRIMARY KEY, doc jsonb NOT NULL)"
_INSERT_FLOOR = f"INSERT INTO {FLOOR_TABLE} (doc) VALUES (%s)"
_SELECT_STEPS = "SELECT * FROM tidebase.steps WHERE run_id = %s"


def step_output(i: int) -> dict[str, Any]:
    """The value every benchmark step produces: a dict whose JSON is about 200 bytes."""
    return {"i": i, "payload": "x" * PAYLOAD_CHARS}


def payload_bytes() -> int:
    """Size of one step's JSON output (for the report header)."""
    return len(json.dumps(step_output(1000)))


def fresh_run_id(kind: str) -> str:
    """A run id never used before, so every measured run starts from nothing."""
    return f"bench-{kind}-{uuid.uuid4().hex[:12]}"


@dataclass
class StepRun:
    """N committed steps executed back to back: total wall time, client CPU time, and each step's own latency."""

    steps: int
    wall_s: float
    cpu_s: float
    latencies_s: list[float] = field(repr=False)

    @property
    def per_step_s(self) -> float:
        """Wall time per step: total time / N (for Tidebase, includes starting and completing the run)."""
        return self.wall_s / self.steps

    @property
    def cpu_per_step_s(self) -> float:
        """Client (this process) CPU time per step."""
        return self.cpu_s / self.steps

    def as_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "wall_s": self.wall_s, "cpu_s": self.cpu_s, "latencies_s": self.latencies_s}


# -- raw floor --------------------------------------------------------------------------------------------------------


def create_floor_table(dsn: str) -> None:
    """Creates the floor's table: a bigserial primary key and one jsonb column."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_CREATE_FLOOR)


def _insert_loop(conn: psycopg.Connection[Any], n: int) -> StepRun:
    latencies = []
    with conn.cursor() as cur:
        cpu0, start = process_time(), perf_counter()
        for i in range(n):
            began = perf_counter()
            cur.execute(_INSERT_FLOOR, (Jsonb(step_output(i)),))
            latencies.append(perf_counter() - began)
        wall = perf_counter() - start
        cpu = process_time() - cpu0
    return StepRun(n, wall, cpu, latencies)


def measure_floor(dsn: str, steps: int, warmup: int) -> StepRun:
    """The floor: `steps` single-row INSERTs of a ~200-byte jsonb document on one autocommit connection.

    Each INSERT is its own committed transaction, i.e. one round trip and one WAL flush, the least any durable
    per-step checkpoint can cost. The connection is opened and warmed with `warmup` INSERTs before timing.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        _insert_loop(conn, warmup)
        return _insert_loop(conn, steps)


# -- Tidebase executed steps -------------------------------------------------------------------------------------------


class TimedSteps:
    """Workflow of `input["n"]` steps named "s", each returning `step_output(i)`; times every run.step call."""

    def __init__(self) -> None:
        self.latencies: list[float] = []

    def __call__(self, run: Any, input: dict[str, Any]) -> str:
        for i in range(input["n"]):
            began = perf_counter()
            run.step("s", lambda i=i: step_output(i))
            self.latencies.append(perf_counter() - began)
        return "done"


class AsyncTimedSteps:
    """The asyncio twin of `TimedSteps`."""

    def __init__(self) -> None:
        self.latencies: list[float] = []

    async def __call__(self, run: Any, input: dict[str, Any]) -> str:
        for i in range(input["n"]):
            began = perf_counter()
            await run.step("s", lambda i=i: step_output(i))
            self.latencies.append(perf_counter() - began)
        return "done"


def run_steps(tide: Tidebase, steps: int) -> StepRun:
    """One `tide.run` of a fresh run executing `steps` steps; wall time spans the whole `tide.run` call."""
    workflow = TimedSteps()
    run_id = fresh_run_id("exec")
    cpu0, start = process_time(), perf_counter()
    tide.run(WORKFLOW, workflow, run_id=run_id, input={"n": steps})
    wall, cpu = perf_counter() - start, process_time() - cpu0
    return StepRun(steps, wall, cpu, workflow.latencies)


async def arun_steps(tide: AsyncTidebase, steps: int) -> StepRun:
    """The asyncio twin of `run_steps`."""
    workflow = AsyncTimedSteps()
    run_id = fresh_run_id("aexec")
    cpu0, start = process_time(), perf_counter()
    await tide.run(WORKFLOW, workflow, run_id=run_id, input={"n": steps})
    wall, cpu = perf_counter() - start, process_time() - cpu0
    return StepRun(steps, wall, cpu, workflow.latencies)


async def _measure_async(dsn: str, steps: int, warmup: int) -> StepRun:
    tide = AsyncTidebase(dsn)
    try:
        await arun_steps(tide, warmup)
        return await arun_steps(tide, steps)
    finally:
        await tide.close()


def measure_tidebase_async(dsn: str, steps: int, warmup: int) -> StepRun:
    """Executed steps through AsyncTidebase under `asyncio.run`: one instance, warmed, then one timed run."""
    return asyncio.run(_measure_async(dsn, steps, warmup))


# -- replay -----------------------------------------------------------------------------------------------------------


class PlannedFailure(Exception):
    """Raised by `ReplayWorkflow` on its first invocation, to leave a failed run with all its checkpoints."""


class ReplayWorkflow:
    """Workflow of `steps` steps. The first invocation executes them all and then raises (the run fails with `steps`
    checkpoints); a later invocation replays them and records the instant its code passes the last replayed step,
    i.e. enters step `steps + 1`, in `reached`."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.fail = True
        self.reached: float | None = None

    def __call__(self, run: Any, input: Any) -> str:
        for i in range(self.steps):
            run.step("s", lambda i=i: step_output(i))
        if self.fail:
            raise PlannedFailure
        self.reached = perf_counter()
        return "done"


def prepare_failed_run(tide: Tidebase, steps: int) -> tuple[str, ReplayWorkflow]:
    """Creates a failed run holding `steps` completed checkpoints; returns its id and workflow (set to resume)."""
    workflow = ReplayWorkflow(steps)
    run_id = fresh_run_id("replay")
    try:
        tide.run(WORKFLOW, workflow, run_id=run_id, input={"m": steps})
    except PlannedFailure:
        pass
    else:
        raise RuntimeError("the replay workflow was expected to fail on its first invocation")
    workflow.fail = False
    return run_id, workflow


def measure_replay(tide: Tidebase, steps: int) -> tuple[str, float]:
    """Seconds from calling `tide.run` on a failed run with `steps` checkpoints until its workflow enters step
    `steps + 1`: takes the lease and loads every checkpoint (one round trip), then replays each step from memory.
    Returns the run id too (its checkpoints feed `measure_select`)."""
    run_id, workflow = prepare_failed_run(tide, steps)
    start = perf_counter()
    tide.run(WORKFLOW, workflow, run_id=run_id)
    assert workflow.reached is not None
    return run_id, workflow.reached - start


def measure_select(conn: psycopg.Connection[Any], run_id: str) -> float:
    """Seconds for one raw `SELECT * FROM tidebase.steps WHERE run_id = %s` (all rows fetched and decoded) on a warm
    connection: the floor for loading a run's checkpoints. Runs the query once untimed first."""
    with conn.cursor() as cur:
        cur.execute(_SELECT_STEPS, (run_id,))
        cur.fetchall()
        start = perf_counter()
        cur.execute(_SELECT_STEPS, (run_id,))
        cur.fetchall()
        return perf_counter() - start


# -- diagnostics ------------------------------------------------------------------------------------------------------


class RawCompleteSteps:
    """Workflow that, while its run holds the lease, executes Tidebase's own `complete_step` statement directly on a
    separate autocommit psycopg connection, `warmup` times untimed then `steps` times timed, without any library
    code in the loop. The result separates the statement's cost (server work plus one round trip) from the
    library's client-side cost per step."""

    def __init__(self, dsn: str, steps: int, warmup: int) -> None:
        self.dsn = dsn
        self.steps = steps
        self.warmup = warmup
        self.result: StepRun | None = None

    def __call__(self, run: Any, input: Any) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self._loop(conn, run, "warm", self.warmup)
            self.result = self._loop(conn, run, "s", self.steps)
        return "done"

    @staticmethod
    def _loop(conn: psycopg.Connection[Any], run: Any, prefix: str, n: int) -> StepRun:
        statement = load_queries()["complete_step"]
        latencies = []
        cpu0, start = process_time(), perf_counter()
        for i in range(n):
            params = {"run_id": run.run_id, "token": run.token, "key": f"{prefix}#{i}", "name": prefix,
                      "occurrence": i + 1, "input_hash": "bench", "contract": "{}", "step_id": uuid.uuid4().hex,
                      "output": json.dumps(step_output(i)), "attempt": 1}
            began = perf_counter()
            row = conn.execute(statement, params).fetchone()
            latencies.append(perf_counter() - began)
            if row is None:
                raise RuntimeError("complete_step was refused: the benchmark run lost its lease")
        wall, cpu = perf_counter() - start, process_time() - cpu0
        return StepRun(n, wall, cpu, latencies)


def measure_raw_complete_step(dsn: str, steps: int, warmup: int) -> StepRun:
    """`steps` executions of Tidebase's complete_step statement from a plain psycopg loop (see RawCompleteSteps)."""
    workflow = RawCompleteSteps(dsn, steps, warmup)
    with Tidebase(dsn) as tide:
        tide.run(WORKFLOW, workflow, run_id=fresh_run_id("rawsql"))
    assert workflow.result is not None
    return workflow.result
