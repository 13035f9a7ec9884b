"""The observer of the core's transitions (`tidebase.core.observe`): metrics, spans and transition log lines.

Importing this module installs `Telemetry` as the process's observer; the facade, the worker and the server import
it, so every process that runs workflows reports them. Each hook does in-process work only: a counter or histogram
update (`tidebase.ops.metrics`), a span when OpenTelemetry is configured (`tidebase.ops.tracing`), a log line when
`tidebase.runs` is enabled for it (`tidebase.ops.logs`). No hook raises: a failure of the telemetry is logged once at
DEBUG and never fails a run.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from tidebase.core import observe
from tidebase.ops import tracing
from tidebase.ops.logs import run_transition
from tidebase.ops.metrics import METRICS

logger = logging.getLogger("tidebase.telemetry")

_STOPS = frozenset({"suspended", "cancelled", "lease_lost", "interrupted", "released"})


class _Run:
    """What an invocation's observer keeps between its start and its end."""

    __slots__ = ("span", "workflow")

    def __init__(self, workflow: str, span: tracing.Invocation | None) -> None:
        self.workflow = workflow  # the capped label value
        self.span = span


class Telemetry(observe.Observer):
    """Metrics, spans and log lines for every transition (see the module docstring)."""

    def invocation_began(self, run_id: str, create: dict[str, Any] | None) -> Any:
        try:
            return tracing.begin(run_id, create)
        except Exception:
            logger.debug("tracing failed", exc_info=True)
            return None

    def run_created(self, run_id: str, workflow: str, parent_id: str | None = None) -> None:
        fields: dict[str, Any] = {"parent_id": parent_id} if parent_id else {}
        run_transition("created", run_id, workflow, None, **fields)

    def run_started(self, ctx: Any, handle: Any) -> Any:
        METRICS.max_workflows = ctx.engine.settings.metrics_max_workflows  # the process's last Tidebase decides
        label = METRICS.workflow(ctx.workflow)
        METRICS.runs_started.inc((label,))
        run_transition("started", ctx.run_id, ctx.workflow, ctx.attempt)
        span = None
        try:
            span = tracing.started(ctx, handle)
        except Exception:
            logger.debug("tracing failed", exc_info=True)
        return _Run(label, span)

    def run_ended(self, ctx: Any, handle: Any, outcome: str, error: BaseException | None) -> None:
        _count_verdict(handle.workflow if isinstance(handle, _Run) else METRICS.workflow(ctx.workflow), outcome)
        run_transition(outcome, ctx.run_id, ctx.workflow, ctx.attempt,
                       error=error if outcome not in ("completed", "suspended", "released") else None)
        if isinstance(handle, _Run):
            try:
                tracing.ended(handle.span, outcome, error)
            except Exception:
                logger.debug("tracing failed", exc_info=True)

    def door_run(self, run: dict[str, Any], outcome: str) -> None:
        label = METRICS.workflow(run["workflow"])
        if outcome == "started":
            METRICS.runs_started.inc((label,))
        else:
            _count_verdict(label, outcome)
        run_transition(outcome, run["id"], run["workflow"], run["attempt"])

    def run_abandoned(self, handle: Any, error: BaseException | None) -> None:
        try:
            tracing.ended(handle, "abandoned" if error is not None else "already_completed", error)
        except Exception:
            logger.debug("tracing failed", exc_info=True)

    def step_began(self, ctx: Any, key: str, attempt: int) -> Any:
        try:
            return tracing.step_began(ctx, key, attempt)
        except Exception:
            logger.debug("tracing failed", exc_info=True)
            return None

    def step_ended(self, ctx: Any, handle: Any, error: BaseException | None) -> None:
        if handle is None:
            return
        try:
            tracing.step_ended(handle, error)
        except Exception:
            logger.debug("tracing failed", exc_info=True)

    def step_executed(self, ctx: Any, key: str, seconds: float) -> None:
        METRICS.steps.observe(seconds, (METRICS.workflow(ctx.workflow), "executed"))

    def step_replayed(self, ctx: Any, key: str, seconds: float) -> None:
        METRICS.steps.observe(seconds, (METRICS.workflow(ctx.workflow), "replayed"))
        try:
            tracing.step_replayed(ctx, key, seconds)
        except Exception:
            logger.debug("tracing failed", exc_info=True)

    def lease_takeover(self, run_id: str) -> None:
        METRICS.lease_takeovers.inc()

    def gate_resolved(self, created_at: datetime, resolved_at: datetime | None) -> None:
        if resolved_at is not None:
            METRICS.gate_wait.observe(max(0.0, (resolved_at - created_at).total_seconds()))

    def database_error(self, error: BaseException) -> None:
        METRICS.database_errors.inc((type(error).__name__,))


def _count_verdict(label: str, outcome: str) -> None:
    """Counts how an invocation of a run of workflow `label` ended, in either door."""
    if outcome == "completed":
        METRICS.runs_completed.inc((label,))
    elif outcome in _STOPS:
        METRICS.runs_stopped.inc((label, outcome))
    else:
        METRICS.runs_failed.inc((label, outcome))


def install() -> None:
    """Makes `Telemetry` the observer of the core's transitions (idempotent)."""
    if not isinstance(observe.observer, Telemetry):
        observe.install(Telemetry())


install()
