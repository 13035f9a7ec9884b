# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""Applying the numbered SQL migrations, safely when many processes start at once.

The runner takes a session advisory lock on a dedicated connection, waiting at most `lock_timeout` seconds and
failing closed (`MigrationLockTimeout`) rather than proceeding without it. Under the lock it creates the schema and
the `tidebase.schema_migrations` ledger if needed, checks that every applied migration still has the checksum of the
file shipped with this version (an edited released migration is refused), and applies each missing one in its own
transaction together with its ledger row: a migration that fails leaves the version where it was. Running it again
is a no-op. It never drops or rewrites data on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import Connection
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from ._connect import Timeouts, connect_error, tuned_conninfo
from ._translate import translated
from .errors import SchemaOutOfDate
from .sql import load_queries, migrations

# Arbitrary, fixed key for pg_advisory_lock: "tidebase" in ASCII, folded into a bigint.
MIGRATION_LOCK_KEY = 0x7469646562617365


@dataclass(frozen=True)
class MigrationResult:
    """What a migration run did: versions applied now, and the schema version afterwards."""

    applied: tuple[int, ...]
    version: int


def latest_version() -> int:
    """The schema version this package expects."""
    return migrations()[-1].version


def schema_version(conn: Connection[Any]) -> int:
    """The applied schema version, 0 when Tidebase was never installed in this database."""
    try:
        with conn.cursor() as cur:
            cur.execute(load_queries()["schema_version"])
            row = cur.fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def migrate(target: str | Connection[Any], *, lock_timeout: float = 60.0) -> MigrationResult:
    """Applies every missing migration to the database (a DSN, or an idle connection) and returns what it did.

    Safe to call concurrently from many processes; safe to retry. Raises MigrationLockTimeout when the lock cannot
    be taken within `lock_timeout` seconds, SchemaOutOfDate when an applied migration differs from the shipped file.
    """
    if isinstance(target, str):
        conninfo = tuned_conninfo(target, Timeouts(), application_name="tidebase-migrate")
        try:
            conn = Connection.connect(conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise connect_error(exc, conninfo) from None
        try:
            return _migrate(conn, lock_timeout)
        finally:
            conn.close()
    autocommit = target.autocommit
    target.set_autocommit(True)
    try:
        return _migrate(target, lock_timeout)
    finally:
        target.set_autocommit(autocommit)


def _migrate(conn: Connection[Any], lock_timeout: float) -> MigrationResult:
    queries = load_queries()
    applied_now: list[int] = []
    with translated():
        conn.execute(queries["set_lock_timeout"], {"timeout": f"{int(lock_timeout * 1000)}ms"})
        conn.execute(queries["migration_lock"], {"key": MIGRATION_LOCK_KEY})
        conn.execute(queries["lift_statement_timeout"])
    try:
        with translated():
            conn.execute(queries["bootstrap_migrations"])
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(queries["applied_migrations"])
                applied = {row["version"]: row for row in cur.fetchall()}
        for migration in migrations():
            done = applied.get(migration.version)
            if done is not None:
                if done["checksum"] != migration.checksum:
                    raise SchemaOutOfDate(
                        f"migration {migration.version:04d}_{migration.name} was applied with checksum "
                        f"{done['checksum'][:12]}… but this version ships {migration.checksum[:12]}…"
                    )
                continue
            with translated(migration=migration.version):
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        queries["record_migration"],
                        {"version": migration.version, "name": migration.name, "checksum": migration.checksum},
                    )
            applied_now.append(migration.version)
    finally:
        with translated():
            conn.execute(queries["migration_unlock"], {"key": MIGRATION_LOCK_KEY})
            conn.execute(queries["set_lock_timeout"], {"timeout": "0"})
            conn.execute(queries["reset_statement_timeout"])
    version = schema_version(conn)
    return MigrationResult(tuple(applied_now), version)


def ensure_schema(pool: ConnectionPool[Any], *, auto_migrate: bool) -> int:
    """Checks the schema is current (one round trip when it is); migrates when allowed, else raises SchemaOutOfDate."""
    with translated():
        with pool.connection() as conn:
            version = schema_version(conn)
    if version >= latest_version():
        return version
    if not auto_migrate:
        raise SchemaOutOfDate(
            f"the database schema is at version {version}, this Tidebase needs {latest_version()}: "
            "run `tidebase migrate`"
        )
    with translated():
        with pool.connection() as conn:
            return (migrate(conn)).version
