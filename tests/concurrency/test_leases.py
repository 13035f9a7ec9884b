"""I3 under contention: one lease per run, and a holder whose lease was taken over is fenced out of every write.

Hand-written per flavour (threads and processes here, tasks in test_leases_async.py). Interleavings are proven with
lock waits seen in pg_stat_activity, never with sleeps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from fix_probe import wait_for_lock_waiters
from tidebase import LeaseHeld, LeaseLost, Tidebase

pytestmark = pytest.mark.probe


def test_eight_processes_racing_one_run_execute_each_step_once(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """8 processes call tide.run on one run id while its row is locked; once released, exactly one takes the lease
    and executes each step once, and the other seven get LeaseHeld naming the winner."""
    db.execute("CREATE TABLE executions (step text, worker int)")
    tide = Tidebase(dsn)
    with pytest.raises(RuntimeError):  # create the run (failed, unleased) so all racers meet on its row
        tide.run("race", lambda run, input: (_ for _ in ()).throw(RuntimeError("setup")), run_id="contended")
    tide.close()
    racer = Path(__file__).with_name("racer.py")
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.runs WHERE id = 'contended' FOR UPDATE")
        procs = [subprocess.Popen([sys.executable, str(racer), dsn, str(i)], stdout=subprocess.PIPE, text=True)
                 for i in range(8)]
        wait_for_lock_waiters(observer, "racer-", 8, timeout=60)  # all eight are queued on the run row
    outcomes = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        outcomes.append(json.loads(out))
    ran = [o for o in outcomes if o["outcome"] == "ran"]
    held = [o for o in outcomes if o["outcome"] == "held"]
    assert len(ran) == 1 and len(held) == 7
    assert ran[0]["result"] == [f"s{i}" for i in range(5)]
    rows = db.execute("SELECT step, count(*) FROM executions GROUP BY step ORDER BY step").fetchall()
    assert rows == [(f"s{i}", 1) for i in range(5)]
    assert len({h["owner"] for h in held}) == 1  # all saw the same, single holder


def test_zombie_is_fenced_from_every_write(dsn: str, db: psycopg.Connection[Any]) -> None:
    """After a take-over, every write of the old holder is refused with LeaseLost: step completion, state, custom
    events, run completion; the new holder (token + 1, attempt + 1) finishes the run."""
    tide_a, tide_b = Tidebase(dsn), Tidebase(dsn)
    in_step, resume = threading.Event(), threading.Event()
    zombie: dict[str, Any] = {}
    errors: dict[str, Exception] = {}

    def slow(run: Any, input: Any) -> Any:
        zombie["run"] = run
        run.step("one", lambda: 1)
        run.step("two", lambda: (in_step.set(), resume.wait(30))[1] and 2)
        return "zombie result"

    def try_write(name: str, write: Any) -> None:
        try:
            write()
        except LeaseLost as exc:
            errors[name] = exc

    thread = threading.Thread(target=lambda: try_write("complete_step", lambda: tide_a.run("z", slow, run_id="z1")))
    thread.start()
    assert in_step.wait(30)
    # The lease expires (as if the holder stalled past it): database clock, no sleep.
    db.execute("UPDATE tidebase.runs SET lease_expires_at = now() - interval '1 second' WHERE id = 'z1'")

    def fresh(run: Any, input: Any) -> Any:
        return [run.step("one", lambda: -1), run.step("two", lambda: 22)]

    assert tide_b.run("z", fresh, run_id="z1") == [1, 22]  # "one" replayed from the zombie's checkpoint
    resume.set()
    thread.join(30)
    run = zombie["run"]
    try_write("state", lambda: run.state.set({"stale": True}))
    try_write("emit", lambda: run.emit("agent.stale", {}))
    ran_three = []
    try_write("step", lambda: run.step("three", lambda: ran_three.append(3)))
    assert set(errors) == {"complete_step", "state", "emit", "step"}
    assert ran_three == []  # stopped at the step boundary: no more user code ran
    final = tide_b.runs.get("z1")
    assert (final.status, final.result, final.attempt, final.fencing_token) == ("completed", [1, 22], 2, 2)
    assert db.execute("SELECT count(*) FROM tidebase.state_versions WHERE run_id = 'z1'").fetchone() == (0,)
    tide_a.close()
    tide_b.close()


def test_second_caller_gets_lease_held_or_waits_for_the_lease(dsn: str) -> None:
    """While a run is held, a second tide.run raises LeaseHeld; with wait= it waits, then sees the completed run."""
    tide_a, tide_b = Tidebase(dsn), Tidebase(dsn)
    in_step, release = threading.Event(), threading.Event()
    executions = []

    def wf(run: Any, input: Any) -> Any:
        executions.append(1)
        run.step("block", lambda: (in_step.set(), release.wait(30))[1] and "done")
        return "result"

    thread = threading.Thread(target=lambda: tide_a.run("w", wf, run_id="held-1"))
    thread.start()
    assert in_step.wait(30)
    with pytest.raises(LeaseHeld):
        tide_b.run("w", wf, run_id="held-1")
    waiter: dict[str, Any] = {}
    t2 = threading.Thread(target=lambda: waiter.setdefault("r", tide_b.run("w", wf, run_id="held-1", wait=30)))
    t2.start()
    release.set()
    thread.join(30)
    t2.join(30)
    assert waiter["r"] == "result" and executions == [1]
    tide_a.close()
    tide_b.close()


def test_expired_lease_can_be_taken_over_with_a_new_token(dsn: str, db: psycopg.Connection[Any]) -> None:
    """The lease expiry is computed by the database clock; once past it, another caller takes over (attempt + 1)."""
    tide = Tidebase(dsn, lease_seconds=30)
    with pytest.raises(RuntimeError):
        tide.run("w", lambda run, input: (_ for _ in ()).throw(RuntimeError("x")), run_id="exp-1")
    db.execute("UPDATE tidebase.runs SET status = 'running', lease_owner = 'ghost', "
               "lease_expires_at = now() + interval '1 hour' WHERE id = 'exp-1'")
    with pytest.raises(LeaseHeld):
        tide.run("w", lambda run, input: 1, run_id="exp-1")
    with db.cursor() as cur:  # pin the database clock past the expiry for the take-over statement's session only
        cur.execute("ALTER DATABASE " + conninfo.conninfo_to_dict(dsn)["dbname"] + " SET tidebase.fake_now = "
                    "'2999-01-01T00:00:00Z'")
    tide2 = Tidebase(dsn)
    assert tide2.run("w", lambda run, input: "took over", run_id="exp-1") == "took over"
    assert tide2.runs.get("exp-1").attempt == 2
    tide.close()
    tide2.close()


def _held_run(db: psycopg.Connection[Any], run_id: str) -> int:
    """A run held by owner `w1`, its lease already expired (so another owner may take it over); returns its token."""
    db.execute("SELECT * FROM tidebase.create_run(%s, 'wf', '{}'::jsonb, 'h', false, '{}'::jsonb, NULL, 60000)",
               (run_id,))
    row = db.execute("SELECT fencing_token FROM tidebase.acquire_run(%s, 'w1', 60000, NULL, NULL)",
                     (run_id,)).fetchone()
    assert row is not None
    db.execute("UPDATE tidebase.runs SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (run_id,))
    return int(row[0])


def _complete(conn: psycopg.Connection[Any], run_id: str, token: int, key: str) -> Any:
    return conn.execute("SELECT tidebase.complete_step(%s, %s, %s, %s, 's', 1, 'h', '{}'::jsonb, '1'::jsonb, 1, false)",
                        (run_id, token, key, f"step_{key}")).fetchone()


def test_a_step_write_queued_behind_a_takeover_is_refused_by_the_new_token(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """The fence locks the run row (it no longer updates it). A zombie's step write that reaches the row while a
    take-over holds it waits, and is then checked against the row the take-over committed: refused with TB003, with
    no step, no event and no seq left behind."""
    old = _held_run(db, "q1")
    seq_before = db.execute("SELECT event_seq FROM tidebase.event_counters WHERE run_id = 'q1'").fetchone()
    with psycopg.connect(dsn) as taker:
        row = taker.execute("SELECT fencing_token FROM tidebase.acquire_run('q1', 'w2', 60000, NULL, NULL)").fetchone()
        assert row is not None and row[0] == old + 1  # the take-over, uncommitted: it holds the run row
        outcome: dict[str, Any] = {}

        def zombie() -> None:
            with psycopg.connect(dsn, autocommit=True, application_name="fence-zombie") as conn:
                try:
                    outcome["row"] = _complete(conn, "q1", old, "late")
                except psycopg.Error as exc:
                    outcome["error"] = exc

        thread = threading.Thread(target=zombie)
        thread.start()
        wait_for_lock_waiters(observer, "fence-zombie", 1)  # the zombie's fence waits on the take-over's row lock
        taker.commit()
        thread.join(30)
    assert "row" not in outcome and outcome["error"].sqlstate == "TB003"
    assert db.execute("SELECT count(*) FROM tidebase.steps WHERE run_id = 'q1'").fetchone() == (0,)
    types = [r[0] for r in db.execute("SELECT type FROM tidebase.events WHERE run_id = 'q1' ORDER BY seq")]
    assert "step.completed" not in types and types[-1] == "run.started"
    seq_after = db.execute("SELECT event_seq FROM tidebase.event_counters WHERE run_id = 'q1'").fetchone()
    assert seq_before is not None and seq_after == (seq_before[0] + 1,)  # the take-over's run.started only


def test_a_takeover_waits_for_the_step_write_in_progress(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """The other order: a holder's step write holds the run row lock until it commits, so a take-over (and a
    cancellation) arriving meanwhile waits, then goes ahead after it; the write's event precedes theirs in the log."""
    token = _held_run(db, "q2")
    with psycopg.connect(dsn) as writer:
        assert _complete(writer, "q2", token, "in-flight") == ("step_in-flight",)
        done: dict[str, Any] = {}

        def take_over() -> None:
            with psycopg.connect(dsn, autocommit=True, application_name="fence-taker") as conn:
                done["token"] = conn.execute(
                    "SELECT fencing_token FROM tidebase.acquire_run('q2', 'w2', 60000, NULL, NULL)").fetchone()

        thread = threading.Thread(target=take_over)
        thread.start()
        wait_for_lock_waiters(observer, "fence-taker", 1)  # the take-over waits on the write's lock of the run row
        writer.commit()
        thread.join(30)
    assert done["token"] == (token + 1,)
    log = db.execute("SELECT type, payload ->> 'name' FROM tidebase.events WHERE run_id = 'q2' ORDER BY seq").fetchall()
    assert log[-2:] == [("step.completed", "in-flight"), ("run.started", None)]
    assert db.execute("SELECT status FROM tidebase.steps WHERE run_id = 'q2' AND key = 'in-flight'").fetchone() == (
        "completed",)
