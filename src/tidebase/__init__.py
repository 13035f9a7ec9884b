"""Tidebase: durable checkpoints for AI agents, in your own Postgres.

Wrap each unit of work in `run.step(...)`; its result is committed the moment it completes and replayed when the run
is invoked again with the same run id. See `Tidebase.run`. The asyncio API is `tidebase.aio.AsyncTidebase`.
"""

from __future__ import annotations

from ._serde import JsonSerializer, Serializer
from ._version import __version__
from .children import Child
from .engine import Runs, Tidebase
from .errors import (
    ChildConflict,
    ConfigurationError,
    Conflict,
    DatabaseError,
    DatabaseUnavailable,
    Forbidden,
    GateAlreadyResolved,
    InputMismatch,
    InvalidArgument,
    LeaseHeld,
    LeaseLost,
    ManualReviewRequired,
    MigrationLockTimeout,
    NotFound,
    PayloadError,
    RunCancelled,
    RunCompleted,
    RunSuspended,
    SchemaOutOfDate,
    TidebaseError,
)
from .models import Edge, Event, Run, RunPage, StateVersion, Step
from .queues import QueueInfo, Queues
from .reconciler import Reconciler, TickResult
from .registry import Registry
from .run import RunContext, State
from .schedules import Schedule, Schedules
from .webhooks import verify_webhook_signature
from .worker import Worker

__all__ = [
    "Tidebase", "Runs", "RunContext", "State", "Child",
    "Run", "RunPage", "Step", "Event", "StateVersion", "Edge",
    "Serializer", "JsonSerializer",
    "TidebaseError", "ConfigurationError", "Conflict", "DatabaseError", "DatabaseUnavailable", "InputMismatch",
    "InvalidArgument", "LeaseHeld", "LeaseLost", "ManualReviewRequired", "MigrationLockTimeout", "NotFound",
    "PayloadError", "RunCancelled", "RunCompleted", "SchemaOutOfDate", "GateAlreadyResolved", "ChildConflict",
    "Forbidden", "RunSuspended",
    "Worker", "Reconciler", "TickResult", "Registry", "Queues", "QueueInfo", "Schedules", "Schedule",
    "verify_webhook_signature",
    "__version__",
]
