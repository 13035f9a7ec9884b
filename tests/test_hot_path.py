"""What the per-step hot path costs the database, as properties rather than timings: the fence only locks the run
row and a step's update of the run's event counter is heap-only (HOT); the lease is renewed by the heartbeat in the
library and by the step writes of the HTTP door, whose contract says so (docs/http-api.md#heartbeat)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from tidebase import Tidebase
from tidebase.core.db_async import AsyncDatabase
from tidebase.server.http_engine import AsyncWire

CONTRACT = '{"sideEffects": [], "idempotencyKey": null, "replay": "auto"}'


def _running_run(db: psycopg.Connection[Any], run_id: str, lease_ms: int = 60000) -> int:
    """A run held by owner `w1`; returns its fencing token."""
    db.execute("SELECT * FROM tidebase.create_run(%s, 'wf', '{}'::jsonb, 'h', false, '{}'::jsonb, NULL, %s)",
               (run_id, lease_ms))
    row = db.execute("SELECT fencing_token FROM tidebase.acquire_run(%s, 'w1', %s, NULL, NULL)",
                     (run_id, lease_ms)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_step_leaves_the_run_row_and_updates_its_counter_heap_only(db: psycopg.Connection[Any]) -> None:
    """Ten steps completed in one transaction never update the run row (the fence only locks it) and update the
    run's event counter ten times, every one of them HOT (the session's own statistics counters, exact and
    synchronous); the lease stays where it was."""
    token = _running_run(db, "r")
    before = db.execute("SELECT lease_expires_at, updated_at FROM tidebase.runs WHERE id = 'r'").fetchone()
    counters = ("SELECT pg_stat_get_xact_tuples_updated('tidebase.runs'::regclass), "
                "pg_stat_get_xact_tuples_updated('tidebase.event_counters'::regclass), "
                "pg_stat_get_xact_tuples_hot_updated('tidebase.event_counters'::regclass)")
    with db.transaction():
        first = db.execute(counters).fetchone()  # counts this session has not reported yet are included: subtract
        assert first is not None
        for i in range(10):
            db.execute("SELECT tidebase.complete_step('r', %s, %s, %s, 's', 1, 'h', %s::jsonb, '{\"i\": 1}'::jsonb, 1, "
                       "false)", (token, f"s#{i}", f"step_{i:032x}", CONTRACT))
        last = db.execute(counters).fetchone()
        assert last is not None
    assert tuple(b - a for a, b in zip(first, last, strict=True)) == (0, 10, 10)
    assert db.execute("SELECT lease_expires_at, updated_at FROM tidebase.runs WHERE id = 'r'").fetchone() == before
    assert db.execute("SELECT event_seq FROM tidebase.event_counters WHERE run_id = 'r'").fetchone() == (12,)


def test_the_library_keeps_its_lease_by_heartbeat(dsn: str, db: psycopg.Connection[Any]) -> None:
    """A workflow whose steps together take longer than the lease keeps it live: the heartbeat renews it, not the
    steps. Each step's function reads the lease from the database after working longer than a third of it; 1.2 s
    after the lease was taken, with no renewal, a 0.6 s lease would have expired."""
    tide = Tidebase(dsn, lease_seconds=0.6)
    live: list[bool] = []

    def work() -> None:
        time.sleep(0.4)  # the step's own work, longer than the heartbeat's interval (0.2 s)
        row = db.execute("SELECT lease_expires_at > tidebase.now() FROM tidebase.runs WHERE id = 'slow'").fetchone()
        live.append(bool(row and row[0]))

    try:
        def wf(run: Any, input: Any) -> Any:
            for i in range(3):
                run.step(f"s{i}", work)
            return "done"

        assert tide.run("wf", wf, run_id="slow") == "done"
    finally:
        tide.close()
    assert live == [True, True, True]
    assert db.execute("SELECT status, attempt FROM tidebase.runs WHERE id = 'slow'").fetchone() == ("completed", 1)


def test_http_step_writes_renew_a_live_lease(dsn: str, db: psycopg.Connection[Any]) -> None:
    """steps/begin, step complete and step fail of the holder push a live lease to now + L; an expired one stays
    expired."""

    async def scenario() -> None:
        database = await AsyncDatabase.connect(dsn, min_size=1, max_size=2)
        wire = AsyncWire(database, lease_ms=60000)
        try:
            await wire.create_run("h", "wf", None, {})
            await wire.begin("h", "w1")
            for write in ("begin", "complete"):
                db.execute("UPDATE tidebase.runs SET lease_expires_at = tidebase.now() + interval '1 second' "
                           "WHERE id = 'h'")
                if write == "begin":
                    _, step = await wire.begin_step("h", "w1", "s", "h0", None, {})
                    assert step is not None
                else:
                    await wire.complete_step("h", step["id"], "w1", 1)
                left = db.execute("SELECT extract(epoch FROM lease_expires_at - tidebase.now()) FROM tidebase.runs "
                                  "WHERE id = 'h'").fetchone()
                assert left is not None and left[0] > 50, write
            db.execute("UPDATE tidebase.runs SET lease_expires_at = tidebase.now() - interval '1 second' "
                       "WHERE id = 'h'")
            _, step = await wire.begin_step("h", "w1", "t", "h1", None, {})
            expired = db.execute("SELECT lease_expires_at < tidebase.now() FROM tidebase.runs WHERE id = 'h'")
            assert expired.fetchone() == (True,)
        finally:
            await database.close()

    asyncio.run(scenario())
