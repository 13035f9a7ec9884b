"""The transitions of runs and steps, reported to whoever observes them: metrics, traces and log lines.

The core may not import the layers above it, yet the metrics, the spans and the transition log lines live in
`tidebase.ops` (`ops/metrics.py`, `ops/tracing.py`, `ops/logs.py`). So the core reports each transition with one call
on `observer`, an `Observer` whose methods do nothing; `tidebase.ops.telemetry` installs the real one when it is
imported (by the facade, the worker and the server). I/O-free.

Contracts of every method: it is called in the task or thread of the transition, it is cheap (in-process counters,
no database round trip, no network), and it never raises (an observer that fails must not fail a run). The `handle`
an observer returns from a `*_began` / `run_started` call is opaque to the core and handed back, unchanged, to the
matching end call, exactly once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

# The outcome an observer is told for the status `tidebase.fail_run` left a run in (both doors).
FAILED_AS = {"queued": "requeued", "manual_review": "manual_review", "failed": "failed"}


class Observer:
    """Receives the transitions of the core; this base ignores them all (the default until one is installed).

    `ctx` is the run context of the invocation (sync or async: `run_id`, `workflow`, `attempt`, `metadata`,
    `engine`).
    """

    def invocation_began(self, run_id: str, create: dict[str, Any] | None) -> Any:
        """An invocation of run `run_id` is about to take its lease (before the round trip). `create`: the
        parameters of `create_run` when this invocation may create the run (its `metadata` JSON text may be
        amended, e.g. with the caller's trace context). Returns a handle for `run_started`."""
        return None

    def run_created(self, run_id: str, workflow: str, parent_id: str | None = None) -> None:
        """Run `run_id` was created by this process (committed)."""

    def run_started(self, ctx: Any, handle: Any) -> Any:
        """The context's invocation holds the lease and is about to call the workflow. `handle`: what
        `invocation_began` returned, or None when the lease was taken elsewhere (a worker's claim). Returns the handle
        for `run_ended`."""
        return None

    def run_ended(self, ctx: Any, handle: Any, outcome: str, error: BaseException | None) -> None:
        """The invocation ended with `outcome`: completed, failed, requeued (failed, retried later), manual_review,
        cancelled, suspended, lease_lost or interrupted (the database went away); `error` is what it raised."""

    def door_run(self, run: dict[str, Any], outcome: str) -> None:
        """A run driven over the HTTP door changed state: `started` (begin took the lease), `completed`, `failed`,
        `requeued` or `manual_review`. `run` is the run's row after the change (`id`, `workflow`,
        `attempt`). The library's invocations are reported by `run_started` / `run_ended` instead."""

    def run_abandoned(self, handle: Any, error: BaseException | None) -> None:
        """An invocation whose `invocation_began` handle never reached `run_started` (the lease was held, the run
        was already completed, the database refused)."""

    def step_began(self, ctx: Any, key: str, attempt: int) -> Any:
        """The function of step `key` is about to be called (attempt `attempt`). Returns a handle for
        `step_ended`."""
        return None

    def step_ended(self, ctx: Any, handle: Any, error: BaseException | None) -> None:
        """The step's function returned (`error` None) or raised `error`."""

    def step_executed(self, ctx: Any, key: str, seconds: float) -> None:
        """Step `key` executed and its checkpoint committed, `seconds` after `run.step` was called."""

    def step_replayed(self, ctx: Any, key: str, seconds: float) -> None:
        """Step `key` was served from its checkpoint, in `seconds`."""

    def lease_takeover(self, run_id: str) -> None:
        """This process took over the lease of run `run_id` from a holder that has exited."""

    def gate_resolved(self, created_at: datetime, resolved_at: datetime | None) -> None:
        """A gate was resolved by this process; it had waited from `created_at` to `resolved_at`."""

    def database_error(self, error: BaseException) -> None:
        """A database call failed with `error`, a Tidebase error translated from the driver's."""


#: The installed observer; read it at each call (`observe.observer.x(...)`), since it is installed after import.
observer: Observer = Observer()


def install(new: Observer) -> Observer:
    """Makes `new` the observer of every transition; returns the previous one."""
    global observer
    previous, observer = observer, new
    return previous
