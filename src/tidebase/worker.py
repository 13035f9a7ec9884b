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
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._acompat import Event, event_wait, join, spawn
from ._base import new_owner
from .errors import ConfigurationError, LeaseLost, RunCancelled, RunSuspended, TidebaseError
from .reconciler import Reconciler
from .run import RunContext
from .webhooks import Dispatcher

if TYPE_CHECKING:
    from .engine import Tidebase

logger = logging.getLogger("tidebase.worker")


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
        self.owner = new_owner(f"worker:{tide.owner_label}")
        self.reconciler = Reconciler(tide, actor=f"reconciler:{self.owner}", interval=reconcile_interval)
        self.executed = 0
        self._inflight: dict[str, RunContext | None] = {}
        self._handles: dict[str, Any] = {}
        self._stopping = False
        self._wake = Event()

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
        previous = self._install_signals()
        conninfo = db.pool.conninfo
        dispatcher = Dispatcher(conninfo) if self.webhooks and isinstance(conninfo, str) else None
        if dispatcher is not None:
            dispatcher.start()
        next_tick = 0.0
        logger.info("worker %s: queues %s, concurrency %d, workflows %s", self.owner, self.queues, self.concurrency,
                    names)
        try:
            while not self._stopping:
                self._wake.clear()
                if self.reconcile and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.reconciler.interval
                    try:
                        self.reconciler.tick()
                    except TidebaseError as exc:
                        logger.warning("reconciler tick failed: %s", exc)
                    if dispatcher is not None:
                        dispatcher.wake()
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
                wait = self.poll_interval
                if self.reconcile:
                    wait = min(wait, max(0.0, next_tick - time.monotonic()))
                event_wait(self._wake, wait)
        finally:
            self._drain()
            if dispatcher is not None:
                dispatcher.stop()
            self._restore_signals(previous)
        return self.executed

    def _start(self, row: dict[str, Any]) -> None:
        run_id = row["id"]
        self._inflight[run_id] = None
        self._handles[run_id] = spawn(lambda: self._execute(row), f"tidebase-run-{run_id}")

    def _execute(self, row: dict[str, Any]) -> None:
        run_id = row["id"]
        tide = self._tide
        db = tide._require_db()
        try:
            workflow = tide.registry.get(row["workflow"])
            assert workflow is not None  # claim_runs only returns registered workflows
            checkpoints = db.fetchall("load_checkpoints", {"run_id": run_id}, run_id=run_id)
            ctx = RunContext(tide, row, {cp["key"]: cp for cp in checkpoints}, self.owner)
            self._inflight[run_id] = ctx
            tide._execute(ctx, workflow)
            logger.info("run %s completed", run_id)
        except _Released:
            try:
                db.fetchone("release_run", {"run_id": run_id, "token": row["fencing_token"],
                                                  "reason": "worker shutdown"}, run_id=run_id)
                logger.info("run %s released back to its queue", run_id)
            except TidebaseError as exc:
                logger.warning("run %s could not be released: %s", run_id, exc)
        except (LeaseLost, RunCancelled, RunSuspended) as exc:
            logger.info("run %s stopped: %s", run_id, exc)
        except Exception as exc:  # noqa: BLE001 - recorded by the engine (retried or failed); the worker goes on
            logger.info("run %s failed: %r", run_id, exc)
        finally:
            self.executed += 1
            self._inflight.pop(run_id, None)
            self._handles.pop(run_id, None)
            self._wake.set()

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
