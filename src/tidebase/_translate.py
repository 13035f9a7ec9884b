"""The one place where database errors become Tidebase errors.

State transitions in SQL refuse with custom SQLSTATEs of class `TB` (listed in the header of
`sql/migrations/0001_initial.sql`); this module maps them, and the driver's own errors, to the classes of
`tidebase.errors`, always chaining the original with `raise ... from`. It matches SQLSTATEs, never message text.
It is a plain context manager, so the sync and the async code use the same one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from . import errors

_BY_SQLSTATE: dict[str, type[errors.TidebaseError]] = {
    "TB001": errors.NotFound,
    "TB002": errors.LeaseHeld,
    "TB003": errors.LeaseLost,
    "TB004": errors.RunCancelled,
    "TB005": errors.InputMismatch,
    "TB006": errors.ManualReviewRequired,
    "TB007": errors.RunCompleted,
    "TB008": errors.NotFound,
    "TB009": errors.Conflict,
    "TB010": errors.NotFound,
    "TB011": errors.NotFound,
    "TB012": errors.GateAlreadyResolved,
    "TB013": errors.ChildConflict,
}

# A missing table or function in our schema means the database was never migrated, or is older than this code.
_SCHEMA_MISSING = (pg_errors.UndefinedTable, pg_errors.UndefinedFunction, pg_errors.InvalidSchemaName)


def translate_error(exc: psycopg.Error, **context: Any) -> errors.TidebaseError:
    """The Tidebase error for a driver error, carrying `context` (run_id, step, ...) as attributes."""
    diag = exc.diag
    message = diag.message_primary or str(exc)
    cls = _BY_SQLSTATE.get(exc.sqlstate or "")
    if cls is errors.LeaseHeld:
        return errors.LeaseHeld(message, owner=diag.message_detail or None, expires_at=diag.message_hint, **context)
    if cls is errors.RunCancelled:
        return errors.RunCancelled(message, reason=diag.message_detail or None, **context)
    if cls is errors.GateAlreadyResolved:
        return errors.GateAlreadyResolved(message, decision=diag.message_detail, actor=diag.message_hint or None,
                                          **context)
    if cls is errors.ChildConflict:
        return errors.ChildConflict(message, child_run_id=diag.message_detail, **context)
    if cls is errors.InputMismatch:
        return errors.InputMismatch(message, kind=diag.message_detail, **context)
    if cls is not None:
        return cls(message, **context)
    if isinstance(exc, _SCHEMA_MISSING):
        return errors.SchemaOutOfDate(f"{errors.SchemaOutOfDate.__doc__} ({message})", **context)
    if isinstance(exc, pg_errors.LockNotAvailable):
        return errors.MigrationLockTimeout(message, **context)
    if isinstance(exc, psycopg.OperationalError):
        return errors.DatabaseUnavailable(f"database unavailable: {message}", **context)
    return errors.DatabaseError(f"database error ({exc.sqlstate}): {message}", **context)


@contextmanager
def translated(**context: Any) -> Iterator[None]:
    """Runs the block, re-raising driver errors as Tidebase errors with `context` attached."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate_error(exc, **context) from exc
