"""The asyncio API: `AsyncTidebase`, with the same methods as `Tidebase`, awaited.

Step and workflow functions may be sync or async here.
"""

from __future__ import annotations

from tidebase.agents.children_async import Child
from tidebase.client_async import AsyncRuns, AsyncTidebase
from tidebase.core.context_async import AsyncRunContext, AsyncState
from tidebase.ops.queues_async import AsyncQueues
from tidebase.ops.reconciler_async import AsyncReconciler
from tidebase.ops.schedules_async import AsyncSchedules
from tidebase.ops.worker_async import AsyncWorker

__all__ = ["AsyncQueues", "AsyncReconciler", "AsyncRunContext", "AsyncRuns", "AsyncSchedules", "AsyncState",
           "AsyncTidebase", "AsyncWorker", "Child"]
