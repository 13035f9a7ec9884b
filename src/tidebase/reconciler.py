# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""The reconciler: the periodic pass that makes crashed runs claimable again, enforces deadlines and fires schedules.

Recovery webhooks for expired leases of runs off any queue, and push dispatch to queues with an invoke URL, are
decided here too, as outbox rows.

It runs inside every worker (and `tidebase serve`), but only one is active at a time: a tick first tries a session
advisory lock and does nothing when another process holds it. Each transition is a short transaction in SQL (see
migrations/0004_queues.sql) over a bounded batch found through a partial index, re-checked under the row lock, so a
tick costs the same on a million runs as on ten and a competing reconciler can never double-apply one. The tick does
no network I/O while it holds the lock: webhook deliveries are made afterwards, by `tidebase.webhooks`.

Recovery latency after a crash is bounded by the lease length plus one tick interval.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from ._deadline import guard
from ._translate import translated
from .cron import CronError
from .schedules import plan_fires

if TYPE_CHECKING:
    from psycopg import Connection

    from .engine import Tidebase

logger = logging.getLogger("tidebase.reconciler")


@dataclass
class TickResult:
    """What one tick did. `active` is False when another reconciler held the lock (and this one did nothing)."""

    active: bool
    recovered: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)
    missed: int = 0
    webhooks: list[str] = field(default_factory=list)  # runs off any queue given a lease_expired recovery webhook
    invoked: list[str] = field(default_factory=list)  # run.invoke webhooks queued by push dispatch


class Reconciler:
    """One reconciler instance; call `tick()` periodically (workers do it every `interval` seconds)."""

    def __init__(self, tide: Tidebase, *, actor: str | None = None, batch: int = 500,
                 interval: float = 5.0) -> None:
        self._tide = tide
        self.actor = actor or f"reconciler:{tide.owner_label}"
        self.batch = batch
        self.interval = interval

    def tick(self) -> TickResult:
        """Runs one pass if this process wins the reconciler lock. Safe to call from several processes at once.

        The whole pass is bounded by the client deadline (see `tidebase._deadline`): a stalled connection makes the
        tick raise DatabaseUnavailable instead of hanging, and the advisory lock goes with the dead session."""
        db = self._tide._open()
        with translated():
            with db.pool.connection() as conn:
                return self._tick(conn)

    def _tick(self, conn: Connection[Any]) -> TickResult:
        db = self._tide._require_db()
        queries = db.queries
        with guard(conn, db.timeouts.deadline, "the database (reconciler)"):
            row = _one(conn, queries["reconciler_try_lock"], {})
            if not row["locked"]:
                return TickResult(active=False)
            try:
                return self._pass(conn)
            finally:
                _one(conn, queries["reconciler_unlock"], {})

    def _pass(self, conn: Connection[Any]) -> TickResult:
        queries = self._tide._require_db().queries
        result = TickResult(active=True)
        params = {"actor": self.actor, "limit": self.batch}
        _all(conn, queries["prune_listeners"], {})
        for rec in _all(conn, queries["recover_expired"], params):
            result.recovered.append(rec["run_id"])
            logger.info("run %s: lease of %s expired; requeued (recovery %s)", rec["run_id"], rec["previous_owner"],
                        rec["id"], extra={"event": "run.recovered", "run_id": rec["run_id"],
                                          "previous_owner": rec["previous_owner"], "recovery_id": rec["id"]})
        for row in _all(conn, queries["recover_expired_webhooks"], {"limit": self.batch}):
            result.webhooks.append(row["id"])
        for row in _all(conn, queries["cancel_overdue"], params):
            result.cancelled.append(row["id"])
        for row in _all(conn, queries["dispatch_push"], {"limit": self.batch}):
            result.invoked.append(row["public_id"])
        now = (_one(conn, queries["db_now"], {}))["now"]
        lease_ms = int(self._tide.lease_seconds * 1000)
        for sched in _all(conn, queries["due_schedules"], {"limit": self.batch}):
            try:
                missed, fire_at, next_at = plan_fires(sched["cron"], sched["next_fire_at"], now)
            except CronError as exc:  # stored before the cron dialect was enforced: skipped, never fatal to a tick
                logger.error("schedule %s: cannot fire cron %r: %s", sched["name"], sched["cron"], exc)
                continue
            row = _one(conn, queries["fire_schedule"], {
                "name": sched["name"], "fire_at": fire_at, "missed": missed, "next": next_at, "actor": self.actor,
                "lease_ms": lease_ms,
            })
            if row["run_id"] is not None:
                result.fired.append(row["run_id"])
                result.missed += len(missed)
                if missed:
                    logger.warning("schedule %s: %d fire time(s) missed before %s", sched["name"], len(missed),
                                   fire_at)
        return result


def _all(conn: Connection[Any], query: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    with translated():
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            rows: list[dict[str, Any]] = cur.fetchall()
            return rows


def _one(conn: Connection[Any], query: Any, params: dict[str, Any]) -> dict[str, Any]:
    rows = _all(conn, query, params)
    return rows[0]
