"""The asyncio API: `AsyncTidebase`, with the same methods as `Tidebase`, awaited.

Step and workflow functions may be sync or async here. The records (runs, steps, gates, usage, queue and schedule
infos, ...) and the errors are the ones of `tidebase`: `tidebase.aio.Child is tidebase.Child`.
"""

from __future__ import annotations

from tidebase.agents.gates_async import AsyncGates, AsyncRunGates
from tidebase.agents.records import Child, UsageRecord, UsageReport, UsageTotals
from tidebase.agents.snapshots_async import AsyncSnapshots
from tidebase.agents.usage_async import AsyncUsage
from tidebase.client_async import AsyncRunContext, AsyncRuns, AsyncTidebase
from tidebase.core.context_async import AsyncState
from tidebase.models import Gate, GateDecision
from tidebase.ops.insights_async import AsyncInsights
from tidebase.ops.queues_async import AsyncQueues
from tidebase.ops.reconciler_async import AsyncReconciler
from tidebase.ops.records import QueueInfo, RetentionResult, Schedule, TickResult
from tidebase.ops.schedules_async import AsyncSchedules
from tidebase.ops.worker_async import AsyncWorker

__all__ = ["AsyncGates", "AsyncInsights", "AsyncQueues", "AsyncReconciler", "AsyncRunContext", "AsyncRunGates",
           "AsyncRuns", "AsyncSchedules", "AsyncSnapshots", "AsyncState", "AsyncTidebase", "AsyncUsage",
           "AsyncWorker", "Child", "Gate", "GateDecision", "QueueInfo", "RetentionResult", "Schedule", "TickResult",
           "UsageRecord",
           "UsageReport", "UsageTotals"]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _name.startswith("Async"):
        _obj.__module__ = "tidebase.aio"
del _name, _obj
