"""The one place where database errors become Tidebase errors.

State transitions in SQL refuse with custom SQLSTATEs of class `TB` (listed in the header of
`sql/migrations/0001_baseline.sql`); this module maps them, and the driver's own errors, to the classes of
`tidebase.errors`, always chaining the original with `raise ... from`. It matches SQLSTATEs, never message text.
It is a plain context manager, so the sync and the async code use the same one.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from tidebase import errors
from tidebase.core import observe as _observe
from tidebase.core.owners import describe_holder

_BY_SQLSTATE: dict[str, type[errors.TidebaseError]] = {
    "TB001": errors.RunNotFound,
    "TB002": errors.LeaseHeld,
    "TB003": errors.LeaseLost,
    "TB004": errors.RunCancelled,
    "TB005": errors.InputMismatch,
    "TB006": errors.ManualReviewRequired,
    "TB007": errors.RunCompleted,
    "TB008": errors.StepNotFound,
    "TB009": errors.Conflict,
    "TB010": errors.StateNotFound,
    "TB011": errors.GateNotFound,
    "TB012": errors.GateAlreadyResolved,
    "TB013": errors.ChildConflict,
    "TB014": errors.StepCompleted,
    "TB015": errors.StepNotInReview,
    "40001": errors.TransactionAborted,  # serialization_failure
    "40P01": errors.TransactionAborted,  # deadlock_detected
}

# A missing table or function in our schema means the database was never migrated, or is older than this code.
_SCHEMA_MISSING = (pg_errors.UndefinedTable, pg_errors.UndefinedFunction, pg_errors.InvalidSchemaName)


def translate_error(exc: psycopg.Error, **context: Any) -> errors.TidebaseError:
    """The Tidebase error for a driver error, carrying `context` (run_id, step, ...) as attributes."""
    diag = exc.diag
    message = diag.message_primary or str(exc)
    cls = _BY_SQLSTATE.get(exc.sqlstate or "")
    if cls is errors.LeaseHeld:
        return _lease_held(message, diag.message_detail or None, diag.message_hint, context)
    if cls is errors.RunCancelled:
        return errors.RunCancelled(message, reason=diag.message_detail or None, **context)
    if cls is errors.GateAlreadyResolved:
        return errors.GateAlreadyResolved(message, decision=diag.message_detail, actor=diag.message_hint or None,
                                          **context)
    if cls is errors.ChildConflict:
        return errors.ChildConflict(message, child_run_id=diag.message_detail, **context)
    if cls is errors.InputMismatch:
        kind = diag.message_detail
        return (errors.WorkflowMismatch if kind == "workflow" else errors.InputMismatch)(message, kind=kind, **context)
    if cls is not None:
        return cls(message, **context)
    if isinstance(exc, _SCHEMA_MISSING):
        return errors.SchemaOutOfDate(f"{errors.SchemaOutOfDate.__doc__} ({message})", **context)
    if isinstance(exc, pg_errors.LockNotAvailable):
        return errors.MigrationLockTimeout(message, **context)
    if isinstance(exc, pg_errors.QueryCanceled):
        return errors.DatabaseUnavailable(
            f"the database did not finish a statement in time ({message}): it is overloaded, or a lock is held "
            "elsewhere; the operation can be retried (the bound is Tidebase(statement_timeout=...))", **context)
    if isinstance(exc, psycopg.OperationalError):
        return errors.DatabaseUnavailable(f"database unavailable: {message}", **context)
    return errors.DatabaseError(f"database error ({exc.sqlstate}): {message}", **context)


def _lease_held(message: str, owner: str | None, hint: str | None, context: dict[str, Any]) -> errors.LeaseHeld:
    """LeaseHeld saying who holds the lease, until when, and what the caller can do."""
    try:
        expires_at = datetime.fromisoformat(hint) if hint else None
    except ValueError:
        expires_at = None
    text = (f"{message}; the holder is {describe_holder(owner)}. The lease frees itself when it expires (a live "
            "holder keeps renewing it). To go on: wait for it (tide.run(..., wait=seconds)), cancel the run "
            "(tidebase runs cancel RUN), or stop the holder; a holder process that has exited on this host is "
            "taken over at once")
    return errors.LeaseHeld(text, owner=owner, expires_at=expires_at, **context)


def loggable_traceback(exc: BaseException) -> str:
    """The traceback of `exc` and its causes, with each message cut to its first line.

    A database error's later lines (DETAIL, CONTEXT) may quote a whole row, secrets and resolve tokens included
    ("Failing row contains (...)"), so a log line never carries them.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        first = (str(current).splitlines() or [""])[0]
        frames = "".join(traceback.format_tb(current.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{type(current).__qualname__}: {first}")
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n\nwhich was raised while handling, or caused by:\n\n".join(reversed(parts))


@contextmanager
def translated(**context: Any) -> Iterator[None]:
    """Runs the block, re-raising driver errors as Tidebase errors with `context` attached."""
    try:
        yield
    except psycopg.Error as exc:
        error = translate_error(exc, **context)
        if not (exc.sqlstate or "").startswith("TB"):  # TB*: a refusal by the rules (LeaseHeld, ...), not a failure
            _observe.observer.database_error(error)
        raise error from exc
