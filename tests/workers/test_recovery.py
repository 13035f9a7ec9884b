"""I10 with real worker processes: a worker killed (SIGKILL) or frozen (SIGSTOP) mid-step loses its runs to another
worker once its lease expires; completed steps never execute again, the interrupted step is re-run under its
(pure) resume contract, a zombie that wakes is fenced, and every recovery is recorded.

Leases are 1 s and the reconciler ticks every 0.2 s, so each recovery takes about 1.2 s. Waits poll the database for
the state they need; the kill points of the chaos test are random by design.
"""

from __future__ import annotations

import random
import signal
import time
from typing import Any

import psycopg
import pytest

from fix_probe import wait_until
from tidebase import Tidebase


def _status(db: psycopg.Connection[Any], run_id: str) -> str:
    row = db.execute("SELECT status FROM tidebase.runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None
    return str(row[0])


def _executions(db: psycopg.Connection[Any], run_id: str) -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for exec_id, key, worker in db.execute(
            "SELECT id, key, worker FROM executions WHERE run_id = %s ORDER BY id", (run_id,)):
        out.setdefault(key, []).append((exec_id, worker))
    return out


def _assert_no_execution_after_checkpoint(db: psycopg.Connection[Any]) -> None:
    """Every completed step's stored output is the id of the *last* execution of that step: nothing executed it
    after its checkpoint was written."""
    rows = db.execute("""
        SELECT s.run_id, s.key, s.output::bigint, max(e.id)
          FROM tidebase.steps s JOIN executions e ON e.run_id = s.run_id AND e.key = s.key
         WHERE s.status = 'completed' GROUP BY 1, 2, 3""").fetchall()
    assert rows
    stale = [r for r in rows if r[2] != r[3]]
    assert stale == []


def test_sigkill_mid_step_resumes_on_another_worker(dsn: str, logtables: psycopg.Connection[Any], workers: Any) -> None:
    """Worker A is SIGKILLed inside step s4; worker B resumes the run after A's lease expires: s0..s3 are replayed
    (executed once), s4 runs again, and the recovery is recorded with A as previous holder and B as resumer."""
    db = logtables
    tide = Tidebase(dsn, lease_seconds=1)
    run = tide.enqueue("chaos", input={"steps": 10, "hold": 4, "flag": "go"})
    workers.start("wa")
    wait_until(lambda: db.execute("SELECT 1 FROM executions WHERE key = 's4'").fetchone() is not None, "A in s4")
    workers.kill("wa")
    db.execute("INSERT INTO flags VALUES ('go')")
    workers.start("wb")
    wait_until(lambda: _status(db, run.id) == "completed", "the run to complete on B")
    execs = _executions(db, run.id)
    assert [w for w, in [[x[1] for x in execs[f"s{i}"]] for i in range(4)]] == ["wa"] * 4
    assert [w for _, w in execs["s4"]] == ["wa", "wb"]
    assert all([w for _, w in execs[f"s{i}"]] == ["wb"] for i in range(5, 10))
    _assert_no_execution_after_checkpoint(db)
    recoveries = tide.runs.recoveries(run.id)
    assert len(recoveries) == 1
    rec = recoveries[0]
    assert rec["reason"] == "lease_expired" and rec["outcome"] == "resumed"
    assert rec["interrupted_steps"] == [] or rec["interrupted_steps"] == ["s4"]
    assert rec["previous_owner"].startswith("worker:") and rec["resumed_by"] != rec["previous_owner"]
    assert rec["resumed_token"] == rec["previous_token"] + 1
    types = [e.type for e in tide.runs.events(run.id)]
    requeued = [e.payload for e in tide.runs.events(run.id) if e.type == "run.requeued"]
    assert [(p["reason"], p["recoveryId"]) for p in requeued] == [("lease_expired", rec["id"])]
    assert types[-1] == "run.completed"
    tide.close()


def test_zombie_that_wakes_is_fenced(dsn: str, logtables: psycopg.Connection[Any], workers: Any) -> None:
    """Worker A is frozen (SIGSTOP) inside step s2; B recovers and completes the run; when A wakes, its completion
    of s2 is refused (LeaseLost) and it executes nothing more: s3 ran once, on B, and s2's checkpoint is B's."""
    db = logtables
    tide = Tidebase(dsn, lease_seconds=1)
    run = tide.enqueue("chaos", input={"steps": 5, "hold": 2, "flag": "go"})
    workers.start("za")
    wait_until(lambda: len(_executions(db, run.id).get("s2", [])) == 1, "A in s2")
    workers.kill("za", signal.SIGSTOP)
    workers.start("zb")
    wait_until(lambda: len(_executions(db, run.id).get("s2", [])) == 2, "B in s2 after recovering the run")
    db.execute("INSERT INTO flags VALUES ('go')")
    wait_until(lambda: _status(db, run.id) == "completed", "the run to complete on B")
    workers.kill("za", signal.SIGCONT)
    wait_until(lambda: f"run {run.id} stopped" in workers.log("za"), "A to be fenced", timeout=30)
    assert "lost" in workers.log("za")
    execs = _executions(db, run.id)
    assert [w for _, w in execs["s2"]] == ["za", "zb"]
    assert [w for _, w in execs["s3"]] == ["zb"] and [w for _, w in execs["s4"]] == ["zb"]
    stored = db.execute("SELECT output::bigint FROM tidebase.steps WHERE run_id = %s AND key = 's2'",
                        (run.id,)).fetchone()
    assert stored is not None and stored[0] == execs["s2"][1][0]
    tide.close()


@pytest.mark.timeout(240)
def test_random_sigkills_across_50_runs_of_10_steps(
    dsn: str, logtables: psycopg.Connection[Any], workers: Any
) -> None:
    """50 runs of 10 steps on 2 workers (4 runs each at once), with a worker SIGKILLed at random moments and replaced:
    every run completes, no step executes after its checkpoint, every run that moved between workers has a recorded
    recovery, and no run ever had two workers executing it in turn."""
    db = logtables
    tide = Tidebase(dsn, lease_seconds=1)
    ids = [tide.enqueue("chaos", input={"steps": 10, "sleep": 0.03}).id for _ in range(50)]
    rng = random.Random(20261127)
    names = ["k0", "k1"]
    for name in names:
        workers.start(name, concurrency=4)
    serial, kills = 2, 0

    def remaining() -> int:
        row = db.execute("SELECT count(*) FROM tidebase.runs WHERE status <> 'completed'").fetchone()
        assert row is not None
        return int(row[0])

    deadline = time.monotonic() + 200
    while remaining() and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.3, 0.9))  # chaos timing: where the kill lands is meant to be random
        if kills < 8 and remaining():
            victim = names.pop(rng.randrange(len(names)))
            workers.kill(victim)
            kills += 1
            names.append(f"k{serial}")
            workers.start(names[-1], concurrency=4)
            serial += 1
    assert remaining() == 0, "every run completes"
    assert kills >= 4
    _assert_no_execution_after_checkpoint(db)
    results = {r[0]: r[1] for r in db.execute("SELECT id, result FROM tidebase.runs")}
    assert all(len(results[i]) == 10 for i in ids)
    moved = {r[0] for r in db.execute(
        "SELECT run_id FROM executions GROUP BY run_id HAVING count(DISTINCT worker) > 1")}
    recovered = {r[0] for r in db.execute("SELECT DISTINCT run_id FROM tidebase.recoveries")}
    assert moved, "the kills interrupted some runs"
    assert moved <= recovered
    # never two holders at once: per run, the executing worker only ever changes forward (no A, B, A interleaving)
    for run_id in moved:
        sequence = [w for (w,) in db.execute("SELECT worker FROM executions WHERE run_id = %s ORDER BY id",
                                             (run_id,))]
        holders = [w for i, w in enumerate(sequence) if i == 0 or sequence[i - 1] != w]
        assert len(holders) == len(set(holders)), (run_id, sequence)
    open_recoveries = db.execute("SELECT count(*) FROM tidebase.recoveries WHERE outcome <> 'resumed'").fetchone()
    assert open_recoveries == (0,)
    tide.close()
