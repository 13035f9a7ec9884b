"""The reconciler tick and the claim are served by indexes, not scans, on a large runs table: the real functions are
executed with auto_explain reporting every nested statement's plan, and no plan may scan `runs` sequentially."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from tidebase.sql import load_queries

Q = load_queries()


def test_tick_and_claim_use_indexes_on_200k_runs(db: psycopg.Connection[Any]) -> None:
    """200,000 runs, almost all finished: recover_expired, recovery webhooks for expired leases, cancel_overdue,
    claim_runs, push dispatch, due schedules, the outbox claim and a retention batch plan index scans
    (runs_lease_expiry, runs_webhook_lease_expiry, runs_deadline, runs_queue_due, schedules_due, outbox_due,
    runs_retention), and no plan sorts runs: every ORDER BY over runs, the claim order included, is an index order."""
    db.execute("""
        INSERT INTO tidebase.runs (id, workflow, status, input_hash, queue, available_at, lease_expires_at,
                                   deadline_at, lease_owner)
        SELECT 'r' || i, 'wf',
               CASE WHEN i % 1000 = 0 THEN 'queued' WHEN i % 1000 = 1 THEN 'running' ELSE 'completed' END,
               'h', 'q' || (i % 4), now() - interval '1 minute',
               CASE WHEN i % 1000 = 1 THEN now() - interval '1 minute' END,
               CASE WHEN i % 500 = 0 THEN now() + interval '1 hour' END,
               CASE WHEN i % 1000 = 1 THEN 'ghost' END
          FROM generate_series(1, 200000) AS i""")
    db.execute("ANALYZE tidebase.runs")
    try:
        db.execute("LOAD 'auto_explain'")
    except psycopg.Error as exc:  # pragma: no cover - Debian's and the wheel's servers ship it
        pytest.skip(f"auto_explain is not available on this server: {exc}")
    for setting in ("auto_explain.log_min_duration = 0", "auto_explain.log_nested_statements = on",
                    "auto_explain.log_level = notice", "client_min_messages = notice"):
        db.execute(f"SET {setting}")
    plans: list[str] = []
    db.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
    with db.transaction(force_rollback=True):
        db.execute(Q["recover_expired"], {"actor": "t", "limit": 100}).fetchall()
        db.execute(Q["recover_expired_webhooks"], {"limit": 100, "max_auto_recoveries": 10}).fetchall()
        db.execute(Q["cancel_overdue"], {"actor": "t", "limit": 100}).fetchall()
        db.execute(Q["dispatch_push"], {"limit": 100}).fetchall()
        db.execute(Q["claim_runs"], {"owner": "w", "queues": ["q0", "q1"], "workflows": ["wf"], "limit": 10,
                                     "lease_ms": 1000}).fetchall()
        db.execute(Q["due_schedules"], {"limit": 100}).fetchall()
        db.execute(Q["claim_deliveries"], {"limit": 10, "hold_ms": 1000}).fetchall()
        db.execute(Q["gc_batch"], {"cutoff": "infinity", "statuses": ["completed", "failed", "cancelled"],
                                   "after_at": None, "after_id": None, "limit": 100, "dry_run": True}).fetchall()
    text = "\n".join(plans)
    assert len(plans) >= 5
    assert not re.search(r"Seq Scan on runs", text), text
    # no sort of runs rows: sorting a handful of queue names is fine, sorting a backlog is not
    assert not re.search(r"Sort\s.*\n(?:.*\n){0,2}.*\bon runs\b", text), text
    for index in ("runs_lease_expiry", "runs_webhook_lease_expiry", "runs_deadline", "runs_queue_due",
                  "schedules_due", "outbox_due", "runs_retention"):
        assert index in text, f"{index} not used:\n{text}"
    # the time bounds are index conditions (a range of the index), not filters applied to every entry
    assert re.search(r"Index Cond: \(\(deadline_at IS NOT NULL\) AND \(deadline_at < '", text), text
    assert re.search(r"Index Cond: \(lease_expires_at < '", text), text
