"""A database outage is not a workflow failure: runs wait for the database and resume, their attempts untouched.

The outage is real: a TCP proxy between the worker and PostgreSQL resets every open connection and refuses new ones
for a few seconds (or keeps them open and forwards nothing), while queued runs with `max_attempts=1` are executing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from fix_probe import wait_until
from netfault import FaultProxy
from tidebase import Tidebase, Worker

RUNS = 40


@pytest.fixture
def proxy(server_dsn: str) -> Iterator[FaultProxy]:
    p = FaultProxy.for_dsn(server_dsn)
    yield p
    p.close()


def _counts(db: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(db.execute("SELECT status, count(*) FROM tidebase.runs GROUP BY status").fetchall())


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["cut", "blackhole"])
def test_queued_runs_survive_a_database_outage_without_using_attempts(
    dsn: str, db: psycopg.Connection[Any], proxy: FaultProxy, fault: str
) -> None:
    """40 queued runs (10 steps each) with max_attempts=1 execute through a proxy that cuts (or stalls) every
    connection for 3 s while they run; every run completes, none failed, no failure was counted, and no completed
    step ran twice."""
    tide = Tidebase(proxy.dsn(dsn), lease_seconds=2.0, statement_timeout=1.0, pool_max_size=12)
    executed: list[tuple[str, str]] = []
    lock = threading.Lock()

    @tide.workflow("job")
    def job(run: Any, input: Any) -> Any:
        total = 0
        for i in range(10):
            def body(i: int = i) -> int:
                with lock:
                    executed.append((run.run_id, f"s{i}"))
                time.sleep(0.05)
                return i
            total += run.step(f"s{i}", body)
        return total

    for n in range(RUNS):
        tide.enqueue("job", run_id=f"job-{n}", max_attempts=1)
    worker = Worker(tide, queues=["default"], concurrency=8, poll_interval=0.05, reconcile_interval=0.2,
                    shutdown_grace=5, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_until(lambda: _counts(db).get("completed", 0) >= 5, "some runs completed before the outage")
        with proxy.fault(fault):
            time.sleep(3.0)  # the outage itself: its length is what is under test
        try:
            wait_until(lambda: _counts(db).get("completed", 0) == RUNS, "every run completed after the outage",
                       timeout=60)
        except BaseException:
            stuck = db.execute("SELECT id, status, attempt, failures, available_at - now(), lease_owner, "
                               "lease_expires_at - now() FROM tidebase.runs WHERE status <> 'completed'").fetchall()
            print("runs not completed:", stuck)
            raise
    finally:
        worker.stop()
        thread.join(30)
        tide.close()
    rows = db.execute("SELECT status, failures, failure_class FROM tidebase.runs").fetchall()
    assert {r[0] for r in rows} == {"completed"}
    assert all(r[1] == 0 and r[2] is None for r in rows)
    completed_twice = db.execute("""
        SELECT count(*) FROM tidebase.events
         WHERE type = 'step.completed' GROUP BY run_id, payload->>'name' HAVING count(*) > 1""").fetchall()
    assert completed_twice == []
    assert db.execute("SELECT count(*) FROM tidebase.events WHERE type = 'run.failed'").fetchone() == (0,)
    interrupted = db.execute("""
        SELECT count(DISTINCT run_id) FROM tidebase.events
         WHERE type = 'run.released' OR type = 'run.requeued' OR (type = 'run.started' AND seq > 2)""").fetchone()
    assert interrupted is not None and interrupted[0] > 0  # the outage did hit runs in flight
    assert len(executed) >= RUNS * 10
