"""I6 under contention: one child per (parent, edge name), with racing callers and with a fan-out killed mid-way.

Hand-written per flavour: threads (sync API), tasks (asyncio API) and a real process killed with SIGKILL. The
interleavings are proven with lock waits seen in pg_stat_activity and with database state, never with sleeps.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fanout_worker
import psycopg
import pytest
from psycopg import conninfo

from fix_probe import lock_waiters, wait_for_lock_waiters, wait_until
from tidebase import Tidebase
from tidebase.aio import AsyncTidebase

pytestmark = pytest.mark.probe
CALLERS = 16


def scalar(conn: psycopg.Connection[Any], sql: str, *args: Any) -> Any:
    row = conn.execute(sql, args).fetchone()
    assert row is not None
    return row[0]


def assert_one_child(db: psycopg.Connection[Any], parent_id: str) -> None:
    assert scalar(db, "SELECT count(*) FROM tidebase.runs WHERE parent_id = %s", parent_id) == 1
    assert scalar(db, "SELECT count(*) FROM tidebase.run_edges WHERE parent_run_id = %s", parent_id) == 1
    assert scalar(db, "SELECT count(*) FROM tidebase.events WHERE run_id = %s AND type = 'run.child.created'",
                  parent_id) == 1
    assert scalar(db, "SELECT status FROM tidebase.runs WHERE parent_id = %s", parent_id) == "completed"


def test_16_threads_calling_one_child_edge_create_and_execute_it_once(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """16 threads call run.child with one edge name from one parent context while the parent row is locked; once it
    is released, exactly one child run exists, its workflow ran once, and all 16 callers got its result."""
    tide = Tidebase(conninfo.make_conninfo(dsn, application_name="child-thread"), pool_max_size=CALLERS + 6)
    ready, go = threading.Event(), threading.Event()
    executed: list[str] = []
    outcome: dict[str, Any] = {}

    def child(run: Any, input: Any) -> Any:
        executed.append(run.run_id)
        return run.step("tenfold", lambda: input["n"] * 10)

    def parent(run: Any, input: Any) -> Any:
        ready.set()
        assert go.wait(60)
        with ThreadPoolExecutor(CALLERS) as pool:
            futures = [pool.submit(run.child, "tenfold", child, name="shared", input={"n": 7})
                       for _ in range(CALLERS)]
            return [f.result() for f in futures]

    def drive() -> None:
        try:
            outcome["result"] = tide.run("parent", parent, run_id="tp-1")
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=drive)
    thread.start()
    assert ready.wait(60)
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.runs WHERE id = 'tp-1' FOR UPDATE")
        go.set()
        wait_for_lock_waiters(observer, "child-thread", CALLERS, timeout=60)  # every caller queued on the parent
    thread.join(60)
    tide.close()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"] == [70] * CALLERS
    assert len(executed) == 1
    assert_one_child(db, "tp-1")


async def test_16_tasks_calling_one_child_edge_create_and_execute_it_once(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """The asyncio flavour: 16 tasks on one parent context race run.child on one edge name behind the parent's
    row lock; one child run is created and executed once, and all 16 get its result."""
    tide = AsyncTidebase(conninfo.make_conninfo(dsn, application_name="child-task"), pool_max_size=CALLERS + 6)
    ready, go = asyncio.Event(), asyncio.Event()
    executed: list[str] = []

    async def child(run: Any, input: Any) -> Any:
        executed.append(run.run_id)
        return await run.step("tenfold", lambda: input["n"] * 10)

    async def parent(run: Any, input: Any) -> Any:
        ready.set()
        await go.wait()
        return await asyncio.gather(*(run.child("tenfold", child, name="shared", input={"n": 5})
                                      for _ in range(CALLERS)))

    task = asyncio.create_task(tide.run("parent", parent, run_id="ap-1"))
    await ready.wait()
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.runs WHERE id = 'ap-1' FOR UPDATE")
        go.set()
        await asyncio.to_thread(wait_for_lock_waiters, observer, "child-task", CALLERS, 60)
    assert await asyncio.wait_for(task, 60) == [50] * CALLERS
    await tide.close()
    assert len(executed) == 1
    assert_one_child(db, "ap-1")


def test_fanout_killed_mid_way_resumes_without_duplicate_children(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """I6 under resume: a process running a 20-child fan-out (4 at a time) is SIGKILLed once 10 children completed
    and the next ones are mid-step; after the leases expire, the parent resumed in-process creates each child
    once, does not execute completed children again, re-executes only the interrupted ones, and joins in order."""
    db.execute("CREATE TABLE child_executions (child text NOT NULL, pid int NOT NULL)")
    db.execute("CREATE TABLE fanout_gate (id int PRIMARY KEY)")
    db.execute("INSERT INTO fanout_gate VALUES (1)")
    parent_id = fanout_worker.PARENT_ID
    completed_sql = "SELECT count(*) FROM tidebase.runs WHERE parent_id = %s AND status = 'completed'"
    worker = Path(fanout_worker.__file__)
    with db.transaction():
        db.execute("SELECT 1 FROM fanout_gate WHERE id = 1 FOR UPDATE")  # children from HOLD_FROM on block here
        proc = subprocess.Popen([sys.executable, str(worker), dsn], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

        def at_kill_point() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the worker exited early ({proc.returncode}): {proc.communicate()[1]}")
            return (scalar(observer, completed_sql, parent_id) >= fanout_worker.HOLD_FROM
                    and lock_waiters(observer, fanout_worker.CHILD_APP) >= fanout_worker.MAX_CONCURRENCY)

        wait_until(at_kill_point, "10 completed children and 4 blocked mid-step", timeout=60)
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -9

    completed_before = {r[0] for r in db.execute(
        "SELECT metadata->>'parentEdgeName' FROM tidebase.runs WHERE parent_id = %s AND status = 'completed'",
        (parent_id,))}
    started_before = Counter(r[0] for r in db.execute("SELECT child FROM child_executions"))
    assert len(completed_before) >= fanout_worker.HOLD_FROM
    assert len(started_before) < fanout_worker.CHILDREN  # the kill landed mid-fan-out
    assert scalar(db, "SELECT status FROM tidebase.runs WHERE id = %s", parent_id) == "running"

    # The killed holder's leases (parent and unfinished children) expire: database clock, no sleep.
    db.execute("UPDATE tidebase.runs SET lease_expires_at = now() - interval '1 second' "
               "WHERE status = 'running' AND (id = %s OR parent_id = %s)", (parent_id, parent_id))
    tide = Tidebase(dsn)
    try:
        result = tide.run(fanout_worker.PARENT_WORKFLOW, fanout_worker.make_parent(dsn), run_id=parent_id)
        parent = tide.runs.get(parent_id)
    finally:
        tide.close()

    names = [fanout_worker.child_name(i) for i in range(fanout_worker.CHILDREN)]
    assert result == [{"i": i, "sq": i * i} for i in range(fanout_worker.CHILDREN)]
    assert (parent.status, parent.attempt) == ("completed", 2)
    assert [(s.key, s.status) for s in parent.steps] == [("join:fan", "completed")]
    assert sorted(e.name for e in parent.children) == [f"fan/{n}" for n in names]
    assert len({e.child_run_id for e in parent.children}) == fanout_worker.CHILDREN
    rows = db.execute("SELECT metadata->>'parentEdgeName', status FROM tidebase.runs WHERE parent_id = %s "
                      "ORDER BY 1", (parent_id,)).fetchall()
    assert rows == [(f"fan/{n}", "completed") for n in names]  # one run per child, each completed
    assert scalar(db, "SELECT count(*) FROM tidebase.events WHERE run_id = %s AND type = 'run.child.created'",
                  parent_id) == fanout_worker.CHILDREN

    executions = Counter(r[0] for r in db.execute("SELECT child FROM child_executions"))
    assert set(executions) == set(names)
    for name in names:
        if f"fan/{name}" in completed_before:
            assert executions[name] == 1, name  # completed before the kill: never executed again
        else:
            assert 1 <= executions[name] <= 2, name
            assert executions[name] == started_before[name] + 1, name  # interrupted: resumed exactly once
