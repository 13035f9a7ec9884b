"""Durable agents of the frameworks agent developers write in: `tidebase.integrations.pydantic_ai` (`TidebaseAgent`)
and `tidebase.integrations.openai_agents` (`TidebaseRunner`).

Each integration is an optional extra (`pip install "tidebase-postgres[pydantic-ai]"`, `[openai-agents]`) and imports
its framework only when its own module is imported; this package imports none. Inside a Tidebase workflow, every
model request and every tool call of an agent becomes a checkpointed step of the workflow's run, tools that need
approval become gates, and each model response's usage goes to the run's usage ledger. What they share is here:
`ToolContract` (the resume contract of a side-effecting tool), `current_idempotency_key()`, `current_run()` (the run a
tool is called for), and `OutsideRun`. See docs/integrations.md.
"""

from __future__ import annotations

from tidebase.integrations._common import OutsideRun, ToolContract, current_idempotency_key, current_run

__all__ = ["OutsideRun", "ToolContract", "current_idempotency_key", "current_run"]

OutsideRun.__module__ = ToolContract.__module__ = "tidebase.integrations"  # where users import them from
