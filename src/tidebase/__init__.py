"""Tidebase: durable checkpoints for AI agents, in your own Postgres.

Wrap each unit of work in `run.step(...)`; its result is committed the moment it completes and replayed when the run
is invoked again with the same run id. See `Tidebase.run`. The asyncio API is `tidebase.aio.AsyncTidebase`.
"""

from __future__ import annotations

from tidebase._version import __version__
from tidebase.agents.children import Child
from tidebase.client import Runs, Tidebase
from tidebase.core.context import RunContext, State
from tidebase.core.serde import JsonSerializer, Serializer
from tidebase.errors import (
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
from tidebase.models import Edge, Event, Run, RunPage, StateVersion, Step
from tidebase.ops.queues import QueueInfo, Queues
from tidebase.ops.reconciler import Reconciler, TickResult
from tidebase.ops.registry import Registry
from tidebase.ops.schedules import Schedule, Schedules
from tidebase.ops.webhooks import verify_webhook_signature
from tidebase.ops.worker import Worker

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
