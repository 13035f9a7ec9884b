# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""The run context a workflow receives: checkpointed steps, live state, custom events, and the lease heartbeat.

A context exists for one invocation of one run, while this process holds the run's lease. It was created with every
checkpoint of the run loaded in the same round trip that took the lease, so replayed steps cost no round trip. Every
write it makes carries the lease's fencing token; the database refuses the write once the token is stale (LeaseLost)
or the run is cancelled (RunCancelled). A background heartbeat renews the lease; when renewal fails, the next step
boundary raises instead of running more user code.

The context is safe to use from several tasks (async) or threads (sync) at once: occurrence numbering is locked, and
the database serializes the writes of one run on its row lock.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _serde
from ._acompat import Event, call, check_fn, event_wait, join, sleep, spawn
from ._base import (
    CURRENT_STEP,
    ERROR_LIMIT,
    Action,
    ResumeContract,
    StepKeys,
    check_event_type,
    check_name,
    check_step_name,
    error_payload,
    new_step_id,
    plan_step,
    retry_delay,
)
from .children import Child, run_child, run_fanout
from .errors import (
    DatabaseUnavailable,
    LeaseLost,
    ManualReviewRequired,
    PayloadError,
    RunCancelled,
    RunSuspended,
    TidebaseError,
)
from .gates import RunGates, GateDecision
from .ledger import Snapshots, Usage
from .models import StateVersion

if TYPE_CHECKING:
    from ._db import Database
    from .engine import Tidebase

logger = logging.getLogger("tidebase")

# Exceptions that mean "stop this invocation", not "this step failed": never retried, never recorded as failures. A
# database outage is one: the step runs again when the run resumes.
_CONTROL_FLOW = (LeaseLost, RunCancelled, ManualReviewRequired, RunSuspended, DatabaseUnavailable)


class State:
    """Live state of a run: named streams whose every write is a new, gap-free version (run.state)."""

    def __init__(self, run: RunContext) -> None:
        self._run = run

    def set(
        self, value: Any, *, stream: str = "run", label: str | None = None, reason: str | None = None,
        importance: str | None = None, metadata: dict[str, Any] | None = None,
    ) -> StateVersion:
        """Replaces the stream's value; appends a version and a state.updated event in one transaction."""
        return self._run._write_state("set", stream, value, label, reason, importance, metadata)

    def patch(
        self, partial: Any, *, stream: str = "run", label: str | None = None, reason: str | None = None,
        importance: str | None = None, metadata: dict[str, Any] | None = None,
    ) -> StateVersion:
        """Merges `partial` into the value (Postgres `jsonb ||`: top-level keys of objects, new keys win)."""
        return self._run._write_state("patch", stream, partial, label, reason, importance, metadata)

    def save(self, label: str, reason: str | None = None, *, stream: str = "run") -> StateVersion:
        """Labels the current value as a new version without changing it. NotFound when the stream has no value."""
        check_name(label, "label")
        return self._run._write_state("save", stream, None, label, reason, None, None)

    def get(self, *, stream: str = "run") -> Any:
        """The stream's current value, or None when it was never written."""
        row = self._run._db.fetchone(
            "get_state", {"run_id": self._run.run_id, "stream": stream}, run_id=self._run.run_id
        )
        return row["current_value"] if row else None

    def versions(self, *, stream: str = "run") -> list[StateVersion]:
        """Every version of the stream, oldest first."""
        rows = self._run._db.fetchall(
            "state_versions", {"run_id": self._run.run_id, "stream": stream}, run_id=self._run.run_id
        )
        return [StateVersion.from_row(r) for r in rows]


class RunContext:
    """What a workflow function receives as `run`: `run.step(...)`, `run.state`, `run.emit(...)`, `run.run_id`."""

    def __init__(
        self, tide: Tidebase, row: dict[str, Any], checkpoints: dict[str, dict[str, Any]], owner: str
    ) -> None:
        self.tide = tide
        self.run_id: str = row["id"]
        self.workflow: str = row["workflow"]
        self.attempt: int = row["attempt"]
        self.input: Any = row["input"]
        self.owner = owner
        self.token: int = row["fencing_token"]
        self.state = State(self)
        self.gates = RunGates(self)
        self.usage = Usage(self)
        self.snapshots = Snapshots(self)
        self._db: Database = tide._require_db()
        self._checkpoints = checkpoints
        self._keys = StepKeys()
        self._stopped: TidebaseError | None = None
        self._stop_heartbeat = Event()
        self._heartbeat: Any = None

    # -- steps -----------------------------------------------------------------------------------------------------

    def step(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        input: Any = None,
        retries: int = 0,
        backoff: float = 1.0,
        side_effects: Any = (),
        idempotency_key: str | None = None,
        replay: str | None = None,
    ) -> Any:
        """Runs `fn` once per run as the checkpointed step `name`, or returns its stored output on replay.

        The output is committed (JSON, through the serializer) before this returns, and the decoded stored value is
        returned, identical on first execution and on replay. `input` feeds the step's input hash: a stored
        checkpoint with another hash raises InputMismatch. `retries=N` allows N more attempts with exponential
        backoff (`backoff` seconds, doubling); every failed attempt is recorded. `side_effects`, `idempotency_key`
        and `replay` form the resume contract: a side-effecting step commits a `started` marker first, and if it is
        found interrupted on resume it is re-run only when pure or keyed; otherwise the run is parked and
        ManualReviewRequired is raised. Raises LeaseLost / RunCancelled when this worker may no longer write.
        """
        self._check_alive()
        check_step_name(name)
        check_fn(fn, f"the function of step {name!r}",
                  "run.step(name, fn) calls fn() with no arguments: pass data as input=... or through a lambda")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        contract = ResumeContract.build(side_effects, idempotency_key, replay)
        serializer = self.tide.serializer
        input_hash = _serde.NULL_HASH if input is None else _serde.canonical_hash(input, serializer)
        key, occurrence = self._keys.next(name)
        plan = plan_step(self._checkpoints.get(key), input_hash, run_id=self.run_id, key=key)
        if plan.action is Action.REPLAY:
            if self._checkpoints[key].get("has_usage"):
                self.usage._record_saved(key)
            return plan.output
        ident = {"key": key, "name": name, "occurrence": occurrence, "input_hash": input_hash,
                 "contract": contract.as_text()}
        if plan.action is Action.PARK:
            self._fail_step(ident, plan.attempt, "manual_review", "manual_review",
                                  {"message": "step interrupted: it started and never completed, and its resume "
                                              f"contract (replay={contract.replay!r}) does not allow a re-run"})
            raise ManualReviewRequired(
                f"step {key!r} of run {self.run_id!r} was interrupted and may have had side effects; "
                "release or skip it (tide.runs.release_step / skip_step)", run_id=self.run_id, step=key,
            )
        attempt = plan.attempt
        failures = 0
        while True:
            if contract.needs_marker:
                attempt = self._write_one("start_step", {**ident}, "attempt", key)
            try:
                value = self._call(fn, key)
            except _CONTROL_FLOW:
                raise
            except Exception as exc:  # a failed attempt: recorded, then retried or re-raised
                failures += 1
                final = failures > retries
                status, decision = contract.final_failure() if final else ("failed_retryable", "auto_retry")
                self._fail_step(ident, attempt, status, decision, error_payload(exc))
                if final:
                    raise
                logger.info("step %s of run %s failed (attempt %d), retrying", key, self.run_id, attempt)
                sleep(retry_delay(failures, backoff))
                self._check_alive()
                attempt += 1
                continue
            try:
                text = _serde.encode(value, serializer, limit=self.tide.max_payload_bytes, what="output",
                                     run_id=self.run_id, step=key)
            except PayloadError as exc:
                if contract.needs_marker:  # leave no `running` marker behind a step whose function did run
                    status, decision = contract.final_failure()
                    self._fail_step(ident, attempt, status, decision, error_payload(exc))
                raise
            self._complete_step(ident, attempt, text)
            return json.loads(text)

    def _call(self, fn: Callable[[], Any], key: str) -> Any:
        """Runs a step function with CURRENT_STEP naming it, for the usage it records."""
        current = CURRENT_STEP.set(key)
        try:
            return call(fn)
        finally:
            CURRENT_STEP.reset(current)

    def _complete_step(self, ident: dict[str, Any], attempt: int, output: str) -> None:
        params = {**ident, "run_id": self.run_id, "token": self.token, "step_id": new_step_id(),
                  "output": output, "attempt": attempt}
        row = self._write("complete_step", params, ident["key"])
        if row is None:  # the fence matched nothing: ask the database why (raises)
            self._write("refuse", {"run_id": self.run_id, "token": self.token}, ident["key"])
            raise LeaseLost(f"write on run {self.run_id!r} refused", run_id=self.run_id, step=ident["key"])

    def _fail_step(
        self, ident: dict[str, Any], attempt: int, status: str, decision: str, error: dict[str, Any]
    ) -> None:
        error_text = _serde.encode(error, _serde.JsonSerializer(), limit=ERROR_LIMIT, what="error",
                                   run_id=self.run_id, step=ident["key"])
        self._write_one("fail_step", {**ident, "attempt": attempt, "status": status, "decision": decision,
                                            "error": error_text}, "step_id", ident["key"])

    # -- gates and children ----------------------------------------------------------------------------------------

    def gate(
        self, name: str, prompt: str = "", *, data: Any = None, timeout: float | None = None, suspend: bool = False,
        channels: list[dict[str, Any]] | None = None,
    ) -> GateDecision:
        """Waits for the human decision of gate `name`, created once per run; see `run.gates.wait`."""
        return self.gates.wait(name, prompt, data=data, timeout=timeout, suspend=suspend, channels=channels)

    def child(
        self, workflow_name: str, workflow: Callable[..., Any], *, name: str, input: Any = None
    ) -> Any:
        """Creates (once per edge `name`) and runs a child run of `workflow_name`; returns its result."""
        return run_child(self, workflow_name, workflow, name=name, input=input)

    def fanout(self, name: str, children: list[Child], *, max_concurrency: int | None = None) -> list[Any]:
        """Runs child runs concurrently and checkpoints their joined results as step `join:<name>`."""
        return run_fanout(self, name, children, max_concurrency=max_concurrency)

    # -- state and events ------------------------------------------------------------------------------------------

    def emit(self, type: str, payload: dict[str, Any] | None = None) -> int:
        """Appends a custom event (a type outside the reserved prefixes) to the run's log; returns its seq."""
        self._check_alive()
        check_event_type(type)
        text = _serde.encode(payload or {}, self.tide.serializer, limit=self.tide.max_payload_bytes,
                             what="event payload", run_id=self.run_id)
        return int(self._write_one("append_event", {"type": type, "payload": text}, "seq", None))

    def _write_state(
        self, mode: str, stream: str, value: Any, label: str | None, reason: str | None, importance: str | None,
        metadata: dict[str, Any] | None,
    ) -> StateVersion:
        self._check_alive()
        check_name(stream, "stream")
        if importance is not None and importance not in ("transient", "normal", "checkpoint", "milestone"):
            raise ValueError(f"invalid importance {importance!r}")
        enc = self.tide.serializer
        limit = self.tide.max_payload_bytes
        params = {
            "run_id": self.run_id, "token": self.token, "stream": stream, "mode": mode,
            "value": None if mode == "save" else _serde.encode(value, enc, limit=limit, what="state value",
                                                                 run_id=self.run_id),
            "label": label, "reason": reason, "importance": importance,
            "metadata": _serde.encode(metadata or {}, enc, limit=limit, what="state metadata", run_id=self.run_id),
            "created_by": self.owner, "step_key": None, "target_type": None, "target_id": None,
        }
        row = self._write("write_state", params, None)
        assert row is not None  # write_state returns its row or raises
        return StateVersion.from_row(row)

    def _write_one(self, query: str, params: dict[str, Any], column: str, step: str | None) -> Any:
        row = self._write(query, {**params, "run_id": self.run_id, "token": self.token}, step)
        assert row is not None  # these functions return a value or raise
        return row[column]

    def _write(self, query: str, params: dict[str, Any], step: str | None) -> dict[str, Any] | None:
        """Runs a fenced write. A refusal for lease loss or cancellation also stops this context: every later step,
        state write or event raises the same error before running any user code."""
        try:
            return self._db.fetchone(query, params, run_id=self.run_id, step=step)
        except (LeaseLost, RunCancelled) as exc:
            self._stopped = exc
            raise

    # -- lease -----------------------------------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._stopped is not None:
            raise self._stopped

    def _start_heartbeat(self, interval: float) -> None:
        self._heartbeat = spawn(lambda: self._beat(interval), f"tidebase-heartbeat-{self.run_id}")

    def _stop(self) -> None:
        self._stop_heartbeat.set()
        if self._heartbeat is not None:
            join(self._heartbeat)

    def _beat(self, interval: float) -> None:
        """Renews the lease every `interval` seconds until stopped; on refusal, marks the context stopped.

        A renewal that fails for a transient reason (the database unreachable: each try is bounded by the client
        deadline) is logged once, retried at the next beat, and its recovery is logged too: the heartbeat never
        stops silently.
        """
        failing_since: float | None = None
        while not event_wait(self._stop_heartbeat, interval):
            try:
                self._db.fetchone("renew_lease", {"run_id": self.run_id, "token": self.token},
                                        run_id=self.run_id)
            except (LeaseLost, RunCancelled) as exc:
                self._stopped = exc
                logger.warning("run %s: %s; stopping at the next step boundary", self.run_id, exc)
                return
            except TidebaseError as exc:  # transient (e.g. connection): the next beat tries again
                if failing_since is None:
                    failing_since = time.monotonic()
                    logger.warning("run %s: lease renewal failed, retrying every %.1f s: %s", self.run_id, interval,
                                   exc)
                else:
                    logger.debug("run %s: lease renewal failed again: %s", self.run_id, exc)
                continue
            if failing_since is not None:
                logger.warning("run %s: lease renewed again after %.1f s of failures", self.run_id,
                               time.monotonic() - failing_since)
                failing_since = None
