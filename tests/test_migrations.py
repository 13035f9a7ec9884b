"""Migrations: a fresh database reaches head, concurrent runners apply each version once, a failing migration
leaves the version unchanged, re-running is a no-op, and a held lock fails closed."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tidebase import MigrationLockTimeout, SchemaOutOfDate, Tidebase
from tidebase.core import migrate as migrate_module
from tidebase.core.migrate import MIGRATION_LOCK_KEY, latest_version, migrate
from tidebase.sql import Migration


def test_fresh_database_migrates_to_head_and_rerun_is_noop(empty_dsn: str) -> None:
    """The first run applies every migration; the second applies nothing."""
    first = migrate(empty_dsn)
    assert first.applied == tuple(range(1, latest_version() + 1)) and first.version == latest_version()
    again = migrate(empty_dsn)
    assert again.applied == () and again.version == latest_version()


def test_concurrent_runners_apply_each_migration_once(empty_dsn: str) -> None:
    """Eight runners started together all succeed, and the ledger holds each version exactly once."""
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(migrate(empty_dsn))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert sorted(v for r in results for v in r.applied) == list(range(1, latest_version() + 1))
    with psycopg.connect(empty_dsn) as conn:
        rows = conn.execute("SELECT version, count(*) FROM tidebase.schema_migrations GROUP BY version").fetchall()
    assert all(n == 1 for _, n in rows)


def test_failing_migration_leaves_version_unchanged(empty_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that errors is rolled back with its ledger row: the schema stays at the previous version."""
    head = migrate(empty_dsn).version
    broken = Migration(head + 1, "broken", "CREATE TABLE tidebase.half (x int); SELECT 1/0", "c")
    shipped = migrate_module.migrations()
    monkeypatch.setattr(migrate_module, "migrations", lambda: (*shipped, broken))
    with pytest.raises(Exception, match="division by zero"):
        migrate(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT max(version) FROM tidebase.schema_migrations").fetchone() == (head,)
        assert conn.execute("SELECT to_regclass('tidebase.half')").fetchone() == (None,)


def test_held_lock_fails_closed(empty_dsn: str) -> None:
    """When another process holds the migration lock past the timeout, the runner raises instead of proceeding."""
    with psycopg.connect(empty_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        with pytest.raises(MigrationLockTimeout):
            migrate(empty_dsn, lock_timeout=0.2)
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('tidebase.runs')").fetchone() == (None,)


def test_library_migrates_on_first_use_unless_told_not_to(empty_dsn: str) -> None:
    """Tidebase applies migrations on first use; with auto_migrate=False it raises SchemaOutOfDate instead."""
    with pytest.raises(SchemaOutOfDate):
        Tidebase(empty_dsn, auto_migrate=False).run("w", lambda run, input: 1)
    tide = Tidebase(empty_dsn)
    assert tide.run("w", lambda run, input: 1) == 1
    tide.close()


def test_edited_released_migration_is_refused(empty_dsn: str) -> None:
    """An applied migration whose shipped file changed is reported, not silently skipped."""
    migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("UPDATE tidebase.schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(SchemaOutOfDate, match="checksum"):
        migrate(empty_dsn)
