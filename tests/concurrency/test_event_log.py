"""I4 under contention: 32 writers on one run's log get seq 1..N with no gap and no duplicate, in commit order.

Threads share one run context (as fan-out does); the run row is held locked by the test until all 32 writers are
queued behind it (proven in pg_stat_activity), so every one of them really contends for the counter.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from fix_probe import wait_for_lock_waiters
from tidebase import Conflict, Tidebase

pytestmark = pytest.mark.probe
WRITERS = 32


def test_32_concurrent_writers_get_gap_free_ordered_seqs(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """32 threads writing events, state versions and steps at once on one run produce seq 1..N exactly once each,
    and state versions 1..k without a gap."""
    tide = Tidebase(conninfo.make_conninfo(dsn, application_name="writer"), pool_max_size=WRITERS + 2)
    ready = threading.Event()
    go = threading.Event()

    def wf(run: Any, input: Any) -> Any:
        def write(i: int) -> None:
            if i % 3 == 0:
                run.emit("agent.tick", {"i": i})
            elif i % 3 == 1:
                run.state.patch({f"k{i}": i})
            else:
                run.step(f"step-{i}", lambda: i)

        ready.set()
        assert go.wait(30)
        threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return "ok"

    runner = threading.Thread(target=lambda: tide.run("fan", wf, run_id="log-1"))
    runner.start()
    assert ready.wait(30)
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.runs WHERE id = 'log-1' FOR UPDATE")
        go.set()
        wait_for_lock_waiters(observer, "writer", WRITERS, timeout=60)
    runner.join(60)
    events = tide.runs.events("log-1")
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(events) + 1))
    bodies = [e for e in events if e.type in ("agent.tick", "state.updated", "step.completed")]
    assert len(bodies) == WRITERS
    ids = [e.id for e in events]
    assert ids == sorted(ids)  # commit order equals seq order: the row lock serialized the writers
    versions = [v[0] for v in db.execute(
        "SELECT version FROM tidebase.state_versions WHERE run_id = 'log-1' ORDER BY version").fetchall()]
    assert versions == list(range(1, len(versions) + 1))
    assert tide.runs.get("log-1").status == "completed"
    tide.close()


def test_a_refused_write_leaves_no_gap(tide: Tidebase, db: psycopg.Connection[Any]) -> None:
    """A write that fails inside its statement (a completion that conflicts) rolls back its seq: the log stays
    gap-free and the next event takes the next number."""

    def wf(run: Any, input: Any) -> Any:
        run.step("once", lambda: 1)
        row = db.execute("SELECT input_hash FROM tidebase.steps WHERE run_id = 'gap-1'").fetchone()
        assert row is not None
        ident = {"key": "once", "name": "once", "occurrence": 1, "input_hash": row[0], "contract": "{}"}
        with pytest.raises(Conflict):
            run._complete_step(ident, 2, '"other output"', time.perf_counter())
        return run.emit("agent.after", {})

    seq_after = tide.run("w", wf, run_id="gap-1")
    seqs = [e.seq for e in tide.runs.events("gap-1")]
    assert seqs == list(range(1, len(seqs) + 1))
    assert seq_after == 4  # run.created, run.started, step.completed, then this event
