"""The errors Tidebase raises: one tree rooted at `TidebaseError`.

Each class is named for what the caller can do about it, and its docstring is its default message. Database errors
are translated into these classes in exactly one place (`tidebase.core.translate`), by SQLSTATE, never by message text.
`RunCancelled` and `ManualReviewRequired` are ordinary exceptions: a workflow that catches them should re-raise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class TidebaseError(Exception):
    """Tidebase error."""

    def __init__(self, message: str | None = None, **context: Any) -> None:
        super().__init__(message or (self.__doc__ or "").strip())
        self.context = context
        for key, value in context.items():
            setattr(self, key, value)


class ConfigurationError(TidebaseError):
    """Tidebase is misconfigured."""


class NotFound(TidebaseError):
    """The run, step or stream does not exist."""


class InputMismatch(TidebaseError):
    """A stored run or checkpoint was written for another workflow or other input."""


class LeaseHeld(TidebaseError):
    """Another worker holds a live lease on this run."""

    owner: str | None
    expires_at: datetime | None


class LeaseLost(TidebaseError):
    """This worker's lease on the run was taken over or expired; its writes are refused."""


class RunCancelled(TidebaseError):
    """The run is cancelled and accepts no further writes."""


class RunCompleted(TidebaseError):
    """The run is already completed and accepts no further writes."""


class ManualReviewRequired(TidebaseError):
    """A step was interrupted and cannot be re-run safely; an operator must release or skip it."""


class Conflict(TidebaseError):
    """The write conflicts with what is stored (e.g. a completed step with another output)."""


class GateAlreadyResolved(Conflict):
    """The gate was already resolved; `decision` and `actor` carry the winning decision."""

    decision: str | None
    actor: str | None


class ChildConflict(InputMismatch):
    """A child run already exists under this edge name with another workflow or input."""


class Forbidden(TidebaseError):
    """The credentials presented (e.g. a gate's resolve token) do not grant this action."""


class RunSuspended(TidebaseError):
    """The run released its lease to wait (for a gate decision, or a durable timer); invoke it again later to resume.

    `gate_id` names the gate it waits for; a timer's suspension has `gate_id` None, and `timer` (its step key) and
    `wake_at` (its wake time by the database clock) set."""

    gate_id: str | None
    timer: str | None = None
    wake_at: datetime | None = None


class PayloadError(TidebaseError):
    """A value cannot be stored: not JSON-serializable, contains U+0000, or exceeds the payload limit."""


class InvalidArgument(TidebaseError, ValueError):
    """An argument is invalid."""


class SchemaOutOfDate(TidebaseError):
    """The database schema is older than this version of Tidebase; run `tidebase migrate`."""


class MigrationLockTimeout(TidebaseError):
    """Could not take the migration lock in time; another process may be migrating."""


class DatabaseError(TidebaseError):
    """The database reported an error."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached."""


class TransactionAborted(DatabaseError):
    """The database aborted the transaction to settle a conflict with a concurrent one (a serialization failure or a
    deadlock); nothing of it was written, and it can be retried."""


# Precise kinds of the errors above. Each is a subclass, so code catching the general class keeps working; the HTTP
# server answers each with its own code (docs/http-api.md#error-table).


class RunNotFound(NotFound):
    """The run does not exist."""


class StepNotFound(NotFound):
    """The step does not exist in this run."""


class GateNotFound(NotFound):
    """The gate does not exist in this run."""


class StateNotFound(NotFound):
    """The state stream has no version yet."""


class ScheduleNotFound(NotFound):
    """The schedule does not exist."""


class WorkflowMismatch(InputMismatch):
    """A run with this id exists for another workflow."""


class StepCompleted(Conflict):
    """The step is already completed (with another output)."""


class StepNotInReview(Conflict):
    """The step is not parked for manual review."""


class NoRecoveryWebhook(Conflict):
    """The run has no recovery webhook configured."""


class InvalidToken(Forbidden):
    """The resolve token is not the gate's."""


_PUBLIC = (
    TidebaseError, ConfigurationError, NotFound, InputMismatch, LeaseHeld, LeaseLost, RunCancelled, RunCompleted,
    ManualReviewRequired, Conflict, GateAlreadyResolved, ChildConflict, Forbidden, RunSuspended, PayloadError,
    InvalidArgument, SchemaOutOfDate, MigrationLockTimeout,
    DatabaseError, DatabaseUnavailable, TransactionAborted,
    RunNotFound, StepNotFound, GateNotFound, StateNotFound, ScheduleNotFound, WorkflowMismatch, StepCompleted,
    StepNotInReview, NoRecoveryWebhook, InvalidToken,
)
for _cls in _PUBLIC:
    _cls.__module__ = "tidebase"

__all__ = [cls.__name__ for cls in _PUBLIC]
