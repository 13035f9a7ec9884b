"""A durable timer across a worker restart, with real worker processes (worker_proc.py, workflow `cool-off`).

A one-hour run.sleep gives the run's lease back (`queued`, available at the wake time) so no process holds it; the
worker stops; the database clock is moved an hour ahead (`ALTER DATABASE ... SET tidebase.fake_now`, seen by the
sessions opened afterwards, so by the next worker's); a new worker claims the run through the normal claim path and
finishes it. The step before the sleep is not executed again, and the sleep returns without waiting.
"""

from __future__ import annotations

import signal
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from fix_probe import wait_until
from tidebase import Tidebase


def _one(db: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = db.execute(query, args).fetchone()
    return None if row is None else row[0]


def _move_clock(db: psycopg.Connection[Any], seconds: float) -> None:
    now = _one(db, "SELECT tidebase.now()")
    db.execute(sql.SQL("ALTER DATABASE {} SET tidebase.fake_now = {}").format(
        sql.Identifier(db.info.dbname), sql.Literal((now + timedelta(seconds=seconds)).isoformat())))


def test_a_one_hour_sleep_survives_a_worker_restart(
    dsn: str, logtables: psycopg.Connection[Any], workers: Any
) -> None:
    db = logtables
    tide = Tidebase(dsn)
    run = tide.enqueue("cool-off", run_id="cool-1", input={"seconds": 3600})
    workers.start("wa")
    wait_until(lambda: _one(db, "SELECT count(*) FROM tidebase.events WHERE run_id = 'cool-1' "
                                "AND type = 'run.suspended'") == 1, "the run to give its lease back at the timer")
    row = db.execute("SELECT status, queue, lease_owner, available_at FROM tidebase.runs "
                     "WHERE id = 'cool-1'").fetchone()
    assert row is not None
    status, queue, owner, available_at = row
    wake = _one(db, "SELECT (input ->> 'wakeAt')::timestamptz FROM tidebase.steps "
                    "WHERE run_id = 'cool-1' AND key = 'cool-off'")
    assert (status, queue, owner, available_at) == ("queued", "default", None, wake)
    workers.kill("wa", signal.SIGTERM)  # a graceful stop: nothing of the run is held or in flight
    assert workers.procs["wa"].returncode == 0
    assert _one(db, "SELECT status FROM tidebase.runs WHERE id = 'cool-1'") == "queued"

    _move_clock(db, 3600)
    workers.start("wb")
    wait_until(lambda: _one(db, "SELECT status FROM tidebase.runs WHERE id = 'cool-1'") == "completed",
               "the new worker to finish the run")
    done = tide.runs.get(run.id)
    assert done.result["slept"] < 1.0  # the sleep returned without waiting
    executions = db.execute("SELECT key, worker FROM executions WHERE run_id = 'cool-1' ORDER BY id").fetchall()
    assert executions == [("prepare", "wa"), ("finish", "wb")]  # prepare was replayed on wb, not executed
    types = [t for (t,) in db.execute("SELECT type FROM tidebase.events WHERE run_id = 'cool-1' ORDER BY seq")]
    assert [t for t in types if t.startswith(("timer.", "run.suspended", "run.completed"))] == [
        "timer.started", "run.suspended", "timer.fired", "run.completed"]
    tide.close()
