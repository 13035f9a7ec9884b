"""Tidebase: durable checkpoints for AI agents, in your own Postgres.

Wrap each unit of work in `run.step(...)`; its result is committed the moment it completes and replayed when the run
is invoked again with the same run id. See `Tidebase.run`. The asyncio API is `tidebase.aio.AsyncTidebase`.
"""

from __future__ import annotations

from tidebase._version import __version__
from tidebase.agents.gates import Gates, RunGates
from tidebase.agents.records import Child, UsageRecord, UsageReport, UsageTotals
from tidebase.agents.snapshots import Snapshots
from tidebase.agents.usage import Usage
from tidebase.client import RunContext, Runs, Tidebase
from tidebase.core.context import State
from tidebase.core.serde import JsonSerializer, Serializer
from tidebase.errors import (
    ChildConflict,
    ConfigurationError,
    Conflict,
    DatabaseError,
    DatabaseUnavailable,
    Forbidden,
    GateAlreadyResolved,
    GateNotFound,
    InputMismatch,
    InvalidArgument,
    InvalidToken,
    LeaseHeld,
    LeaseLost,
    ManualReviewRequired,
    MigrationLockTimeout,
    NoRecoveryWebhook,
    NotFound,
    PayloadError,
    RunCancelled,
    RunCompleted,
    RunNotFound,
    RunSuspended,
    ScheduleNotFound,
    SchemaOutOfDate,
    StateNotFound,
    StepCompleted,
    StepNotFound,
    StepNotInReview,
    TidebaseError,
    TransactionAborted,
    WorkflowMismatch,
)
from tidebase.models import Edge, Event, Gate, GateDecision, Run, RunPage, StateVersion, Step
from tidebase.ops.insight_models import DailyUsage, Link, RunOverview, RunPulse, StateStream, StepUsage, Totals
from tidebase.ops.insights import Insights
from tidebase.ops.queues import Queues
from tidebase.ops.reconciler import Reconciler
from tidebase.ops.records import Fire, QueueInfo, RetentionResult, Schedule, TickResult
from tidebase.ops.registry import Registry
from tidebase.ops.schedules import Schedules
from tidebase.ops.webhooks import verify_webhook_signature
from tidebase.ops.worker import Worker
from tidebase.settings import Settings

__all__ = [
    "Tidebase", "Settings", "Runs", "RunContext", "State", "Child",
    "Run", "RunPage", "Step", "Event", "StateVersion", "Edge", "Gate", "GateDecision",
    "Gates", "RunGates", "Usage", "UsageRecord", "UsageReport", "UsageTotals", "Snapshots",
    "Insights", "RunPulse", "RunOverview", "Link", "StateStream", "StepUsage", "Totals", "DailyUsage",
    "Serializer", "JsonSerializer",
    "TidebaseError", "ConfigurationError", "Conflict", "DatabaseError", "DatabaseUnavailable", "InputMismatch",
    "InvalidArgument", "LeaseHeld", "LeaseLost", "ManualReviewRequired", "MigrationLockTimeout", "NotFound",
    "PayloadError", "RunCancelled", "RunCompleted", "SchemaOutOfDate", "GateAlreadyResolved", "ChildConflict",
    "Forbidden", "RunSuspended", "TransactionAborted", "RunNotFound", "StepNotFound", "GateNotFound",
    "StateNotFound", "ScheduleNotFound", "WorkflowMismatch", "StepCompleted", "StepNotInReview", "NoRecoveryWebhook",
    "InvalidToken",
    "Worker", "Reconciler", "TickResult", "RetentionResult", "Registry", "Queues", "QueueInfo", "Schedules",
    "Schedule", "Fire",
    "verify_webhook_signature",
    "__version__",
]

# Public types say where users import them from (in reprs, tracebacks and documentation).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "tidebase"
del _name, _obj

