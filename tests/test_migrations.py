"""Migrations and function files: a fresh database reaches head and reproduces the schema snapshot, concurrent
runners apply each version and each function file once, a changed function file is re-applied once, a failing
migration or function file leaves its ledger unchanged, re-running is a no-op, a held lock fails closed, a current
database costs one round trip, and a database of a development version is refused with what to do."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tidebase import MigrationLockTimeout, SchemaOutOfDate, Tidebase
from tidebase.core import migrate as migrate_module
from tidebase.core.migrate import MIGRATION_LOCK_KEY, ensure_schema, latest_version, migrate
from tidebase.sql import FunctionFile, Migration, function_files

ROOT = Path(__file__).resolve().parent.parent
# The ledger of a database created by a development version, before the baseline: versions 1-6 under other names.
PRE_RELEASE = [(1, "initial"), (2, "agent_features"), (3, "http"), (4, "queues"), (5, "dispatch"), (6, "hardening")]


def _snapshot_tool() -> Any:
    spec = importlib.util.spec_from_file_location("schema_snapshot", ROOT / "tools" / "schema_snapshot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fresh_database_migrates_to_head_and_rerun_is_noop(empty_dsn: str) -> None:
    """The first run applies every migration and every function file; the second applies nothing."""
    first = migrate(empty_dsn)
    assert first.applied == tuple(range(1, latest_version() + 1)) and first.version == latest_version()
    assert first.functions == tuple(f.name for f in function_files())
    again = migrate(empty_dsn)
    assert (again.applied, again.functions, again.version) == ((), (), latest_version())


def test_fresh_database_matches_the_schema_snapshot(empty_dsn: str) -> None:
    """Migrations plus function files reproduce sql/schema.sql exactly (on the Postgres major version it records)."""
    tool = _snapshot_tool()
    shipped = tool.SNAPSHOT.read_text("utf-8")
    migrate(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        fresh = tool.render(conn)
    if tool.snapshot_major(shipped) != tool.snapshot_major(fresh):
        pytest.skip(f"sql/schema.sql was made on PostgreSQL {tool.snapshot_major(shipped)}, this server is "
                    f"{tool.snapshot_major(fresh)}: pg_get_* output is compared on the same major version only")
    assert fresh == shipped, "sql/schema.sql is out of date: run python tools/schema_snapshot.py"


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
    assert sorted(f for r in results for f in r.functions) == sorted(f.name for f in function_files())
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


def test_changed_function_file_is_reapplied_once(empty_dsn: str) -> None:
    """A function file whose ledger checksum differs from the shipped one (an upgrade that changed it) is applied
    again, once: its functions are back to the shipped bodies, its ledger row has the shipped checksum, and a second
    run applies nothing."""
    migrate(empty_dsn)
    [webhooks] = [f for f in function_files() if f.name == "95_webhooks.sql"]
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE OR REPLACE FUNCTION tidebase.delivered_types() RETURNS jsonb LANGUAGE sql AS $$ "
                     "SELECT '[]'::jsonb $$")
        conn.execute("UPDATE tidebase.schema_functions SET checksum = 'of-an-older-version' WHERE name = %s",
                     (webhooks.name,))
    assert migrate(empty_dsn).functions == (webhooks.name,)
    with psycopg.connect(empty_dsn) as conn:
        types = conn.execute("SELECT jsonb_array_length(tidebase.delivered_types())").fetchone()
        checksum = conn.execute("SELECT checksum FROM tidebase.schema_functions WHERE name = %s",
                                (webhooks.name,)).fetchone()
    assert types == (8,) and checksum == (webhooks.checksum,)
    assert migrate(empty_dsn).functions == ()


def test_failing_function_file_leaves_the_ledger_unchanged(empty_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A function file that errors is rolled back with its ledger row: neither the file's functions nor its checksum
    are recorded, and the files before it keep theirs."""
    migrate(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        before = conn.execute("SELECT name, checksum FROM tidebase.schema_functions ORDER BY name").fetchall()
    broken = FunctionFile("98_broken.sql", "CREATE OR REPLACE FUNCTION tidebase.half() RETURNS int LANGUAGE sql AS "
                                           "$$ SELECT 1 $$; SELECT 1/0", "c")
    shipped = migrate_module.function_files()
    monkeypatch.setattr(migrate_module, "function_files", lambda: (*shipped, broken))
    with pytest.raises(Exception, match="division by zero"):
        migrate(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        after = conn.execute("SELECT name, checksum FROM tidebase.schema_functions ORDER BY name").fetchall()
        assert conn.execute("SELECT to_regprocedure('tidebase.half()')").fetchone() == (None,)
    assert after == before


def test_current_database_costs_one_round_trip(dsn: str) -> None:
    """ensure_schema on a current database runs one statement; once a function file's ledger row differs, the
    database is no longer current and, without auto-migration, SchemaOutOfDate says to migrate."""
    executed: list[str] = []

    class Counting(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            executed.append(str(query))
            return super().execute(query, params, **kwargs)

    with ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True, "cursor_factory": Counting}) as pool:
        assert ensure_schema(pool, auto_migrate=False) == latest_version()
        assert len(executed) == 1
        with pool.connection() as conn:
            conn.execute("UPDATE tidebase.schema_functions SET checksum = 'other' WHERE name = '40_steps.sql'")
        with pytest.raises(SchemaOutOfDate, match="tidebase migrate"):
            ensure_schema(pool, auto_migrate=False)
        assert ensure_schema(pool, auto_migrate=True) == latest_version()


def test_database_of_a_development_version_is_refused(empty_dsn: str) -> None:
    """A database whose ledger holds the pre-release migrations (1-6 under their old names) is refused by migrate and
    by the library with SchemaOutOfDate saying it was created by a development version and how to start over, and is
    left as it was."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA tidebase")
        conn.execute("CREATE TABLE tidebase.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                     "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())")
        conn.cursor().executemany(
            "INSERT INTO tidebase.schema_migrations (version, name, checksum) VALUES (%s, %s, 'old')", PRE_RELEASE)
    message = r"development version.*DROP SCHEMA tidebase CASCADE.*new database"
    with pytest.raises(SchemaOutOfDate, match=message):
        migrate(empty_dsn)
    for auto_migrate in (True, False):
        tide = Tidebase(empty_dsn, auto_migrate=auto_migrate)
        with pytest.raises(SchemaOutOfDate, match=message):
            tide.run("w", lambda run, input: 1)
        tide.close()
    with psycopg.connect(empty_dsn) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'tidebase'").fetchall()
    assert tables == [("schema_migrations",)]


def test_version_3_counters_move_to_event_counters(empty_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Upgrading a version-3 database (each run's counter in runs.event_seq, its webhook triggers on runs) keeps every
    run's log going where it stopped: the counter of a run with events moves to tidebase.event_counters, a run without
    events gets its row with its first event, a run with channels has its next event (and only that one) delivered,
    and runs.event_seq and its triggers are gone."""
    shipped = migrate_module.migrations()
    monkeypatch.setattr(migrate_module, "migrations", lambda: shipped[:3])
    monkeypatch.setattr(migrate_module, "function_files", lambda: ())
    assert migrate(empty_dsn).version == 3
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO tidebase.runs (id, workflow, status, input, input_hash, event_seq, webhooks)
            VALUES ('up-1', 'wf', 'failed', '{}', 'h', 3, '[]'),
                   ('up-2', 'wf', 'failed', '{}', 'h', 1, '[{"url": "http://127.0.0.1:9/hook", "events": ["*"]}]'),
                   ('up-0', 'wf', 'pending', '{}', 'h', 0, '[]')""")
        conn.execute("INSERT INTO tidebase.events (run_id, seq, type) "
                     "VALUES ('up-1', 1, 'x.a'), ('up-1', 2, 'x.b'), ('up-1', 3, 'x.c'), ('up-2', 1, 'x.a')")
        # the trigger version 3's function files made: it depends on the column the migration drops
        conn.execute("CREATE FUNCTION tidebase.runs_webhooks() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RETURN NULL; END $$")
        conn.execute("CREATE CONSTRAINT TRIGGER runs_webhooks_update AFTER UPDATE ON tidebase.runs "
                     "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                     "WHEN (NEW.webhooks <> '[]'::jsonb AND NEW.event_seq > OLD.event_seq) "
                     "EXECUTE FUNCTION tidebase.runs_webhooks()")
    monkeypatch.undo()
    result = migrate(empty_dsn)
    assert result.applied == (4,) and result.version == latest_version()
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        counters = conn.execute("SELECT run_id, event_seq FROM tidebase.event_counters ORDER BY run_id").fetchall()
        assert counters == [("up-1", 3), ("up-2", 1)]
        column = conn.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = 'tidebase' "
                              "AND table_name = 'runs' AND column_name = 'event_seq'").fetchone()
        assert column is None
        assert conn.execute("SELECT to_regprocedure('tidebase.runs_webhooks()')").fetchone() == (None,)
        seqs = [conn.execute("SELECT tidebase.append_event(%s, NULL, 'custom.next', '{}')", (run,)).fetchone()
                for run in ("up-1", "up-1", "up-0", "up-2")]
        assert seqs == [(4,), (5,), (1,), (2,)]
        logged = conn.execute("SELECT run_id, seq FROM tidebase.events WHERE type = 'custom.next' "
                              "ORDER BY run_id, seq").fetchall()
        assert logged == [("up-0", 1), ("up-1", 4), ("up-1", 5), ("up-2", 2)]
        deliveries = conn.execute("SELECT run_id, event_seq, event_type FROM tidebase.outbox").fetchall()
        assert deliveries == [("up-2", 2, "custom.next")]
