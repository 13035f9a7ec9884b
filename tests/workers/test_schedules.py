"""Schedules: 5-field UTC cron (croniter); each fire enqueues exactly once even with several reconcilers ticking at
the same moment; fire times missed while no reconciler ran are recorded as missed, not silently collapsed."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from fix_probe import wait_for_lock_waiters
from tidebase import InvalidArgument, Tidebase
from tidebase.ops.reconciler import Reconciler
from tidebase.ops.schedules import next_fire, plan_fires


def test_plan_fires_reports_missed_times_and_the_next_one() -> None:
    """Pure planning: from a due time 3 h ago on an hourly cron, the 3 older fire times are missed, the newest one
    fires, and the next one is after now."""
    now = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    missed, fire_at, nxt = plan_fires("0 * * * *", datetime(2026, 1, 1, 9, 0, tzinfo=UTC), now)
    assert missed == [datetime(2026, 1, 1, h, 0, tzinfo=UTC) for h in (9, 10, 11)]
    assert fire_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert nxt == datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    assert next_fire("0 9 * * *", datetime(2026, 1, 1, 9, 0, tzinfo=UTC)) == datetime(2026, 1, 2, 9, 0, tzinfo=UTC)


def test_set_validates_and_computes_the_next_fire(dsn: str) -> None:
    """`schedules.set` refuses a cron that is not 5 fields and stores the first fire time after now (UTC)."""
    tide = Tidebase(dsn)
    with pytest.raises(InvalidArgument):
        tide.schedules.set("bad", cron="* * * * * *", workflow="digest")
    with pytest.raises(InvalidArgument):
        tide.schedules.set("bad", cron="61 * * * *", workflow="digest")
    sched = tide.schedules.set("daily-digest", cron="0 9 * * *", workflow="digest", input={"to": "team"})
    fire = sched.next_fire_at.astimezone(UTC)
    assert (fire.hour, fire.minute) == (9, 0) and fire > datetime.now(UTC)
    assert [s.name for s in tide.schedules.list()] == ["daily-digest"]
    assert tide.schedules.delete("daily-digest") and not tide.schedules.delete("daily-digest")
    tide.close()


@pytest.mark.probe
def test_a_schedule_ticked_by_3_reconcilers_fires_once(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """Three reconcilers fire the same due schedule at once (bypassing the advisory lock, held back by the
    schedule's row lock until all three wait on it): one run is enqueued, and the two losers fire nothing."""
    tide = Tidebase(dsn)
    tide.schedules.set("every-minute", cron="* * * * *", workflow="digest", input={"n": 1})
    due = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    db.execute("UPDATE tidebase.schedules SET next_fire_at = %s", (due,))
    now = db.execute("SELECT tidebase.now()").fetchone()
    assert now is not None
    missed, fire_at, nxt = plan_fires("* * * * *", due, now[0])
    fired: list[Any] = []
    query = tide.engine.database().queries["fire_schedule"]

    def fire(i: int) -> None:
        with psycopg.connect(conninfo.make_conninfo(dsn, application_name=f"recon-{i}"), autocommit=True) as conn:
            row = conn.execute(query, {"name": "every-minute", "fire_at": fire_at, "missed": missed, "next": nxt,
                                       "actor": f"r{i}", "lease_ms": 30000}).fetchone()
            fired.append(row[0] if row else None)

    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.schedules WHERE name = 'every-minute' FOR UPDATE")
        threads = [threading.Thread(target=fire, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        wait_for_lock_waiters(observer, "recon-", 3)
    for t in threads:
        t.join()
    assert fired.count(None) == 2
    runs = db.execute("SELECT id, workflow, input, status FROM tidebase.runs").fetchall()
    assert runs == [(next(f for f in fired if f), "digest", {"n": 1}, "queued")]
    # the same through whole reconciler ticks in parallel: one is active, the schedule has nothing more due
    results = []
    ticks = [threading.Thread(target=lambda: results.append(Reconciler(tide).tick())) for _ in range(3)]
    for t in ticks:
        t.start()
    for t in ticks:
        t.join()
    assert sum(len(r.fired) for r in results) == 0
    assert db.execute("SELECT count(*) FROM tidebase.runs").fetchone() == (1,)
    tide.close()


def test_missed_fires_are_recorded_and_only_the_latest_enqueued(dsn: str, db: psycopg.Connection[Any]) -> None:
    """A schedule last due 3 minutes ago (every minute): one tick records the older fire times as `missed`, enqueues
    one run for the newest, and moves the next fire time past now."""
    tide = Tidebase(dsn)
    tide.schedules.set("m", cron="* * * * *", workflow="digest")
    due = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    db.execute("UPDATE tidebase.schedules SET next_fire_at = %s", (due,))
    result = Reconciler(tide).tick()
    assert result.active and len(result.fired) == 1 and result.missed >= 3
    fires = tide.schedules.fires("m")
    assert [f.status for f in fires].count("enqueued") == 1
    assert [f.status for f in fires].count("missed") == result.missed
    assert fires[0].status == "enqueued" and fires[0].run_id == result.fired[0]
    assert tide.schedules.get("m").next_fire_at > datetime.now(UTC)
    assert tide.runs.get(result.fired[0]).status == "queued"
    tide.close()
