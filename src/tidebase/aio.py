"""The asyncio API: `AsyncTidebase`, with the same methods as `Tidebase`, awaited.

Step and workflow functions may be sync or async here.
"""

from __future__ import annotations

from .children_async import Child
from .engine_async import AsyncRuns, AsyncTidebase
from .run_async import AsyncRunContext, AsyncState

__all__ = ["AsyncRunContext", "AsyncRuns", "AsyncState", "AsyncTidebase", "Child"]
