"""What the schema ledgers say, without I/O: the result of a migration run, the state one read of the ledgers
reports, and the advisory lock key every migrating process takes. Shared by `tidebase.core.migrate` and its asyncio
source, so these types exist once."""

from __future__ import annotations

from dataclasses import dataclass

from tidebase.sql import functions_checksum, migrations

# Arbitrary, fixed key for pg_advisory_lock: "tidebase" in ASCII, folded into a bigint.
MIGRATION_LOCK_KEY = 0x7469646562617365


@dataclass(frozen=True)
class MigrationResult:
    """What a migration run did: versions applied now, the function files (re-)applied now, and the schema version
    afterwards."""

    applied: tuple[int, ...]
    version: int
    functions: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchemaState:
    """What one read of the ledgers says: the schema version (0 when never installed), the name of migration 1, and
    the checksum of the applied function files (None when the function ledger does not exist)."""

    version: int
    baseline: str | None
    functions: str | None

    @property
    def current(self) -> bool:
        """True when this package has nothing to apply (or the database belongs to a newer Tidebase)."""
        if self.development_version:
            return False
        if self.version > latest_version():
            return True
        return self.version == latest_version() and self.functions == functions_checksum()

    @property
    def development_version(self) -> bool:
        """True for a database created by a development version of Tidebase, before the baseline."""
        return self.version > 0 and self.baseline != migrations()[0].name

    def problem(self) -> str:
        """Why the schema is not current, and what to do."""
        if self.development_version:
            return development_schema_message()
        if self.version < latest_version():
            return (f"the database schema is at version {self.version}, this Tidebase needs {latest_version()}: "
                    "run `tidebase migrate`")
        return "the database's Tidebase functions differ from this version's: run `tidebase migrate`"


def latest_version() -> int:
    """The schema version this package expects."""
    return migrations()[-1].version


def development_schema_message() -> str:
    """The refusal for a database whose ledger is older than the baseline migration."""
    return ("the tidebase schema in this database was created by a development version of Tidebase (before the "
            f"{migrations()[0].version:04d}_{migrations()[0].name} migration) and cannot be upgraded: start over "
            "with `DROP SCHEMA tidebase CASCADE` (this deletes its runs), or point Tidebase at a new database")
