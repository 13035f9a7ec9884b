# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""The worker: claims queued runs of registered workflows and executes them from their checkpoints.

A worker loops: reconcile (when its interval has passed and no other reconciler is active), claim up to its free
concurrency from its queues (`tidebase.claim_runs`: per-queue caps checked under the queue's row lock, runs taken
with SKIP LOCKED and given a new fencing token), and execute each claimed run concurrently (tasks in asyncio, threads
in the sync API) with the run's lease heartbeat. Completed steps are replayed from their checkpoints; an interrupted
step follows its resume contract. A failure goes back to the queue while attempts remain (SQL decides).

Shutdown (SIGTERM, SIGINT, or `stop()`): the worker stops claiming, lets in-flight runs finish for up to
`shutdown_grace` seconds, then stops each remaining run at its next step boundary and hands it back to its queue
(fenced, so a run the worker no longer owns is left alone). A worker killed outright is covered by the reconciler:
once its leases expire, its runs are requeued and resumed elsewhere.

The worker logs to `tidebase.worker` (configuring nothing: `tidebase worker` does that): a line per run claimed,
completed, failed (with the outcome the engine recorded: retried, failed or parked), released or interrupted, each
with structured fields (`extra`: event, run_id, workflow, attempt, queue, duration_ms). Once per reconcile interval it
also looks for due runs on its queues whose workflow it does not register, which would otherwise wait silently, and
warns once per workflow name.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._acompat import Event, event_wait, join, spawn
from ._logging import format_duration
from ._owners import drop, hold, new_owner
from .errors import ConfigurationError, DatabaseUnavailable, LeaseLost, RunCancelled, RunSuspended, TidebaseError
from .reconciler import Reconciler
from .run import RunContext
from .webhooks import Dispatcher

if TYPE_CHECKING:
    from .engine import Tidebase

logger = logging.getLogger("tidebase.worker")

# The unregistered-workflow check reads at most this many due runs per queue, and reports at most this many names.
UNSERVED_SCAN = 100
UNSERVED_LIMIT = 20


class _Released(RunSuspended):
    """the worker is shutting down: the run goes back to its queue"""


class Worker:
    """Claims and executes runs from `queues`, at most `concurrency` at once. `run()` returns when stopped (or, with
    `burst=True`, once nothing is runnable), after draining; it returns the number of runs it executed."""

    def __init__(
        self,
        tide: Tidebase,
        *,
        queues: Sequence[str] = ("default",),
        concurrency: int = 1,
        poll_interval: float = 1.0,
        reconcile: bool = True,
        reconcile_interval: float = 5.0,
        shutdown_grace: float = 30.0,
        burst: bool = False,
        webhooks: bool = True,
        handle_signals: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be >= 1")
        if not queues:
            raise ConfigurationError("a worker needs at least one queue")
        self._tide = tide
        self.queues = sorted(set(queues))
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.reconcile = reconcile
        self.shutdown_grace = shutdown_grace
        self.burst = burst
        self.webhooks = webhooks
        self.handle_signals = handle_signals
        self.owner = new_owner("worker")
        self.reconciler = Reconciler(tide, actor=f"reconciler:{self.owner}", interval=reconcile_interval)
        self.executed = 0
        self._inflight: dict[str, RunContext | None] = {}
        self._handles: dict[str, Any] = {}
        self._stopping = False
        self._wake = Event()
        self._unserved: set[str] = set()  # workflow names already warned about

    def stop(self) -> None:
        """Asks the worker to stop claiming and drain (safe from a signal handler or another thread)."""
        self._stopping = True
        self._wake.set()

    def run(self) -> int:
        """Runs until stopped; see the class docstring."""
        names = self._tide.registry.names()
        if not names:
            raise ConfigurationError("no workflow is registered: decorate one with @tide.workflow(name)")
        db = self._tide._open()
        hold(self.owner)  # its runs' leases are this process's own for as long as it works: never judged abandoned
        previous = self._install_signals()
        conninfo = db.pool.conninfo
        dispatcher = Dispatcher(conninfo) if self.webhooks and isinstance(conninfo, str) else None
        if dispatcher is not None:
            dispatcher.start()
        next_tick = 0.0
        logger.info("worker %s: queues %s, concurrency %d, workflows %s", self.owner, ", ".join(self.queues),
                    self.concurrency, ", ".join(names), extra={"event": "worker.started", "owner": self.owner,
                                                                "queues": self.queues,
                                                                "concurrency": self.concurrency, "workflows": names})
        try:
            while not self._stopping:
                self._wake.clear()
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.reconciler.interval
                    if self.reconcile:
                        try:
                            self.reconciler.tick()
                        except TidebaseError as exc:
                            logger.warning("reconciler tick failed: %s", exc)
                        if dispatcher is not None:
                            dispatcher.wake()
                    self._warn_unserved(names)
                free = self.concurrency - len(self._inflight)
                claimed: list[dict[str, Any]] = []
                if free > 0:
                    try:
                        claimed = db.fetchall("claim_runs", {
                            "owner": self.owner, "queues": self.queues, "workflows": names, "limit": free,
                            "lease_ms": int(self._tide.lease_seconds * 1000),
                        })
                    except TidebaseError as exc:
                        logger.warning("claim failed: %s", exc)
                for row in claimed:
                    self._start(row)
                if self.burst and not claimed and not self._inflight:
                    break
                if claimed and len(claimed) == free:
                    continue  # maybe more is due: claim again once a slot frees up
                event_wait(self._wake, min(self.poll_interval, max(0.0, next_tick - time.monotonic())))
        finally:
            self._drain()
            if dispatcher is not None:
                dispatcher.stop()
            self._restore_signals(previous)
            drop(self.owner)
        return self.executed

    def _start(self, row: dict[str, Any]) -> None:
        run_id = row["id"]
        self._inflight[run_id] = None
        self._handles[run_id] = spawn(lambda: self._execute(row), f"tidebase-run-{run_id}")

    def _execute(self, row: dict[str, Any]) -> None:
        run_id = row["id"]
        tide = self._tide
        db = tide._require_db()
        started = time.monotonic()
        fields = {"run_id": run_id, "workflow": row["workflow"], "attempt": row["attempt"], "queue": row["queue"]}
        logger.info("run %s claimed: workflow %s, attempt %d, queue %s", run_id, row["workflow"], row["attempt"],
                    row["queue"], extra={"event": "run.claimed", **fields})
        try:
            workflow = tide.registry.get(row["workflow"])
            assert workflow is not None  # claim_runs only returns registered workflows
            checkpoints = db.fetchall("load_checkpoints", {"run_id": run_id}, run_id=run_id)
            ctx = RunContext(tide, row, {cp["key"]: cp for cp in checkpoints}, self.owner)
            self._inflight[run_id] = ctx
            tide._execute(ctx, workflow)
            took = time.monotonic() - started
            logger.info("run %s completed in %s (workflow %s, attempt %d)", run_id, format_duration(took),
                        row["workflow"], row["attempt"],
                        extra={"event": "run.completed", **fields, "duration_ms": round(took * 1000)})
        except _Released:
            try:
                db.fetchone("release_run", {"run_id": run_id, "token": row["fencing_token"],
                                                  "reason": "worker shutdown"}, run_id=run_id)
                logger.info("run %s released back to its queue", run_id, extra={"event": "run.released", **fields})
            except TidebaseError as exc:
                logger.warning("run %s could not be released: %s", run_id, exc)
        except DatabaseUnavailable as exc:
            # Not a workflow failure: nothing was recorded, and the run goes back to its queue once the database
            # answers again (or, if it stays away, when the lease expires and the reconciler requeues the run).
            logger.warning("run %s interrupted by a database outage (%s); handing it back to its queue when the "
                           "database is back", run_id, exc, extra={"event": "run.interrupted", **fields})
            self._release_when_back(run_id, row["fencing_token"])
        except (LeaseLost, RunCancelled, RunSuspended) as exc:
            logger.info("run %s stopped: %s", run_id, exc, extra={"event": "run.stopped", **fields})
        except Exception as exc:  # noqa: BLE001 - recorded by the engine (retried or failed); the worker goes on
            self._log_failure(row, exc, time.monotonic() - started, fields)
        finally:
            self.executed += 1
            self._inflight.pop(run_id, None)
            self._handles.pop(run_id, None)
            self._wake.set()

    def _log_failure(self, row: dict[str, Any], exc: Exception, took: float, fields: dict[str, Any]) -> None:
        """One line for a run whose attempt failed, saying what the engine recorded: retried, parked, or failed."""
        run_id = row["id"]
        try:  # the engine (SQL) decided the outcome; read it rather than guess it
            now = self._tide._require_db().fetchone("get_run", {"run_id": run_id}, run_id=run_id)
        except TidebaseError:
            now = None
        outcome = now["status"] if now is not None else "unknown"
        cls = type(exc)
        kind = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
        message = (str(exc).splitlines() or [""])[0][:500]
        extra = {"event": "run.failed", **fields, "duration_ms": round(took * 1000), "error_type": kind,
                 "error": message, "outcome": outcome, "retry": outcome == "queued"}
        attempts = f"attempt {row['attempt']} of {row['max_attempts']}"
        if outcome == "queued" and now is not None:
            backoff = (now["available_at"] - now["updated_at"]).total_seconds()  # both from the database clock
            extra["retry_in_ms"] = round(backoff * 1000)
            logger.warning("run %s failed after %s (%s): %s: %s; it will be retried in %s", run_id,
                           format_duration(took), attempts, kind, message, format_duration(backoff), extra=extra)
        elif outcome == "manual_review":
            logger.warning("run %s parked for manual review after %s (%s): %s: %s; release or skip the parked step "
                           "(tidebase runs release-step|skip-step %s STEP), then recover the run", run_id,
                           format_duration(took), attempts, kind, message, run_id, extra=extra)
        else:
            why = f" ({now['failure_class']})" if now is not None and now["failure_class"] else ""
            logger.error("run %s failed after %s (%s): %s: %s; not retried, the run is %s%s", run_id,
                         format_duration(took), attempts, kind, message, outcome, why, extra=extra)

    def _warn_unserved(self, names: Sequence[str]) -> None:
        """Warns once per workflow name (per worker) about due runs on this worker's queues that no worker like this
        one claims, because their workflow is not registered here: such a run would otherwise wait silently."""
        params = {"queues": self.queues, "workflows": [*names, *self._unserved], "scan": UNSERVED_SCAN,
                  "limit": UNSERVED_LIMIT, "grace_ms": int(self.reconciler.interval * 1000)}
        try:
            rows = self._tide._require_db().fetchall("unserved_workflows", params)
        except TidebaseError as exc:
            logger.debug("unregistered-workflow check failed: %s", exc)
            return
        queues: dict[str, list[str]] = {}
        for r in rows:
            queues.setdefault(r["workflow"], []).append(r["queue"])
        for name, where in queues.items():
            self._unserved.add(name)
            logger.warning("run(s) of workflow %s are queued on queue %s but this worker does not register %s; "
                           "register it with @tide.workflow(%r) or run a worker that does", name, ", ".join(where),
                           name, name, extra={"event": "workflow.unserved", "workflow": name, "queues": where})

    def _release_when_back(self, run_id: str, token: int) -> None:
        """Releases the run under `token` as soon as the database accepts it, trying until the lease would have
        expired anyway (then the reconciler requeues the run) or the worker stops."""
        db = self._tide._require_db()
        give_up = time.monotonic() + self._tide.lease_seconds
        delay = 0.2
        while time.monotonic() < give_up and not self._stopping:
            try:
                db.fetchone("release_run", {"run_id": run_id, "token": token,
                                                  "reason": "database unavailable"}, run_id=run_id)
            except DatabaseUnavailable:
                event_wait(self._wake, min(delay, max(0.0, give_up - time.monotonic())))
                delay = min(delay * 2, 2.0)
                continue
            except TidebaseError as exc:  # fenced or cancelled meanwhile: nothing left to hand back
                logger.info("run %s was not released: %s", run_id, exc)
                return
            logger.info("run %s released back to its queue after the database outage", run_id)
            return

    def _drain(self) -> None:
        deadline = time.monotonic() + self.shutdown_grace
        while self._inflight and time.monotonic() < deadline:
            self._wake.clear()
            event_wait(self._wake, min(0.1, max(0.0, deadline - time.monotonic())))
        if self._inflight:
            logger.info("grace period over; stopping %d in-flight run(s) at their next step boundary",
                        len(self._inflight))
        for run_id, ctx in list(self._inflight.items()):
            if ctx is not None and ctx._stopped is None:
                ctx._stopped = _Released(f"worker {self.owner} is shutting down; run {run_id!r} goes back to its "
                                         "queue", run_id=run_id)
        for handle in list(self._handles.values()):
            join(handle)

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return previous
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: self.stop())
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
