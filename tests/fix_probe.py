"""Concurrency probes: prove an interleaving by watching pg_stat_activity, never by sleeping.

`wait_for_lock_waiters(conn, prefix, n)` returns once at least `n` sessions whose application_name starts with
`prefix` are blocked on a heavyweight lock (wait_event_type = 'Lock'), i.e. they are queued behind a lock the test
holds. `conn` must be an autocommit connection that is not inside a transaction (pg_stat_activity is a per-transaction
snapshot). The deadline only turns a hang into a failure; it never decides the outcome.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

LOCK_WAITERS = """
SELECT count(*) FROM pg_stat_activity
 WHERE datname = current_database() AND application_name LIKE %s AND wait_event_type = 'Lock'
"""


def lock_waiters(conn: psycopg.Connection[Any], prefix: str) -> int:
    row = conn.execute(LOCK_WAITERS, (prefix + "%",)).fetchone()
    assert row is not None
    return int(row[0])


def wait_for_lock_waiters(conn: psycopg.Connection[Any], prefix: str, n: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = lock_waiters(conn, prefix)
        if count >= n:
            return count
        if time.monotonic() > deadline:
            pytest.fail(f"only {count} of {n} sessions '{prefix}*' reached a lock wait within {timeout}s")
        time.sleep(0.005)


def wait_until(predicate: Any, what: str, timeout: float = 30.0) -> None:
    """Polls `predicate()` until true; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def probe() -> Any:
    """The probe helpers, as a fixture for tests that prefer injection."""
    return wait_for_lock_waiters
