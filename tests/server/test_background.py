"""`tidebase serve` runs the reconciler: one active per database, ticking on its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from server_proc import start_server, stop_server

from fix_probe import wait_until
from tidebase import Tidebase


def test_server_reconciler_fires_a_due_schedule(dsn: str, db: psycopg.Connection[Any]) -> None:
    """With no worker running, a schedule that is due is enqueued by the server's own reconciler tick."""
    tide = Tidebase(dsn)
    tide.schedules.set("nightly", cron="0 3 * * *", workflow="digest", input={"n": 1})
    db.execute("UPDATE tidebase.schedules SET next_fire_at = %s", (datetime.now(UTC) - timedelta(seconds=1),))
    server = start_server(dsn, env={"TIDEBASE_RECONCILE_MS": "100"})
    try:
        wait_until(lambda: db.execute("SELECT count(*) FROM tidebase.runs WHERE workflow = 'digest'").fetchone()
                   == (1,), "the server's reconciler to enqueue the scheduled run", timeout=30)
    finally:
        stop_server(server)
        tide.close()
    assert db.execute("SELECT status FROM tidebase.runs WHERE workflow = 'digest'").fetchone() == ("queued",)
