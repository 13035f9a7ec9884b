"""The asyncio API: `AsyncTidebase`, with the same methods as `Tidebase`, awaited.

Step and workflow functions may be sync or async here.
"""

from __future__ import annotations

from .children_async import Child
from .engine_async import AsyncRuns, AsyncTidebase
from .queues_async import AsyncQueues
from .reconciler_async import AsyncReconciler
from .run_async import AsyncRunContext, AsyncState
from .schedules_async import AsyncSchedules
from .worker_async import AsyncWorker

__all__ = ["AsyncQueues", "AsyncReconciler", "AsyncRunContext", "AsyncRuns", "AsyncSchedules", "AsyncState",
           "AsyncTidebase", "AsyncWorker", "Child"]
