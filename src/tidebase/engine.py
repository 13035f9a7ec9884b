# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""The entry point: `Tidebase` runs workflows durably and reads runs back (`tide.runs`).

`run()` creates or resumes a run, takes its lease and loads its checkpoints in one round trip (pipelined), runs the
workflow with a run context, and records the outcome under the lease's fencing token. The rules (who may hold the
lease, what a resume may reuse, which writes are refused) are enforced by the SQL functions; this module only
sequences the calls and shapes the results. It never starts threads or processes for user code: the workflow runs in
the caller's task.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool

from . import _serde
from ._acompat import Lock, call, check_fn, sleep
from ._base import (
    ERROR_LIMIT,
    check_name,
    check_run_id,
    decode_cursor,
    encode_cursor,
    error_payload,
    list_query,
    new_run_id,
)
from ._config import resolve_dsn
from ._connect import Timeouts
from ._db import Database
from ._owners import describe_holder, drop, hold, holder_exited, new_owner, process_label
from .errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidArgument,
    LeaseHeld,
    LeaseLost,
    NotFound,
    RunCancelled,
    RunSuspended,
)
from .gates import Gates
from .insights import Insights
from .ledger import UsageReport, fork_run, state_at, usage_report
from .migrate import ensure_schema
from .models import RUN_STATUSES, Edge, Event, Run, RunPage, StateVersion, Step
from .queues import Queues, enqueue
from .registry import Registry
from .run import RunContext
from .schedules import Schedules
from .worker import Worker

logger = logging.getLogger("tidebase")

# Exceptions after which this invocation records nothing: it was fenced or cancelled, released its lease to wait, or
# lost the database (an outage is not a workflow failure: the run resumes once the database is back).
_NO_STOP = (LeaseLost, RunCancelled, RunSuspended, DatabaseUnavailable)


class Runs:
    """Reading and operating on runs: `tide.runs.get/list/events/cancel/release_step/skip_step`."""

    def __init__(self, tide: Tidebase) -> None:
        self._tide = tide

    def get(self, run_id: str) -> Run:
        """The run with its steps in order, read from one snapshot. NotFound when it does not exist."""
        db = self._tide._open()
        params = {"run_id": run_id}
        runs, steps, edges = db.snapshot(
            [("get_run", params), ("get_steps", params), ("edges_of_run", params)], run_id=run_id)
        if not runs:
            raise _not_found(run_id)
        return Run.from_row(runs[0], tuple(Step.from_row(s) for s in steps), tuple(Edge.from_row(e) for e in edges))

    def list(
        self, status: str | None = None, workflow: str | None = None, limit: int = 50, cursor: str | None = None,
        since: datetime | None = None,
    ) -> RunPage:
        """A page of runs, newest first, filtered by status and/or workflow, and with `since` to the runs created at
        or after it (an aware datetime); keyset-paginated and index-served."""
        if status is not None and status not in RUN_STATUSES:
            raise InvalidArgument(f"unknown status {status!r}; one of {RUN_STATUSES}")
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit must be between 1 and 1000")
        if since is not None and since.tzinfo is None:
            raise InvalidArgument("since must be an aware datetime (with a time zone)")
        before_at, before_id = decode_cursor(cursor)
        db = self._tide._open()
        query = list_query(status, workflow) + ("_since" if since is not None else "")
        rows = db.fetchall(query, {
            "status": status, "workflow": workflow, "before_at": before_at, "before_id": before_id,
            "limit": limit + 1, "since": since,
        })
        page = tuple(Run.from_row(r) for r in rows[:limit])
        more = len(rows) > limit
        return RunPage(page, encode_cursor(page[-1].created_at, page[-1].id) if more else None)

    def events(self, run_id: str, after: int = 0, limit: int = 10_000) -> builtins.list[Event]:
        """The run's events with seq > `after`, in seq order. NotFound for an unknown run."""
        db = self._tide._open()
        rows = db.fetchall("events_after", {"run_id": run_id, "after": after, "limit": limit}, run_id=run_id)
        if not rows and db.fetchone("get_run", {"run_id": run_id}) is None:
            raise _not_found(run_id)
        return [Event.from_row(r) for r in rows]

    def cancel(self, run_id: str, reason: str | None = None, actor: str | None = None) -> Run:
        """Cancels the run (one-way; idempotent). RunCompleted for a completed run, NotFound for an unknown one."""
        db = self._tide._open()
        row = db.fetchone("cancel_run", {"run_id": run_id, "reason": reason, "actor": actor}, run_id=run_id)
        assert row is not None
        return Run.from_row(row)

    def recover(self, run_id: str, *, actor: str | None = None, queue: str = "default") -> Run:
        """Puts a run that nobody is executing back on its queue (`queue` for a run that had none) for a worker to
        resume from its checkpoints, records the recovery, and returns the run as it now is (`queued`).

        Accepted for failed, pending, waiting and queued runs and for running runs whose lease expired (a crashed
        holder). Conflict says precisely why otherwise: a live lease (who holds it and until when), steps parked for
        manual review (release or skip them first), or a finished run. NotFound for an unknown run."""
        db = self._tide._open()
        row = db.fetchone("recover_run", {"run_id": run_id, "actor": actor or "operator", "queue": queue},
                                run_id=run_id)
        assert row is not None  # recover_run returns the run or raises
        return Run.from_row(row)

    def recoveries(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """Every recovery attempt of the run, oldest first: who detected it, when, why, and its outcome."""
        db = self._tide._open()
        return db.fetchall("recoveries_of_run", {"run_id": run_id}, run_id=run_id)

    def deliveries(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """The run's webhook deliveries, each with its `attempt_log`, oldest first, as `tidebase.public_delivery`
        shows them: no secret (`has_secret` says whether there is one) and no resolve token (the body is `message`,
        with the token null); `channel_id` names the run channel, None for an inline channel of a gate."""
        db = self._tide._open()
        return db.fetchall("deliveries_of_run", {"run_id": run_id}, run_id=run_id)

    def usage(self, run_id: str, *, include_children: bool = False) -> UsageReport:
        """The run's usage records with totals per (kind, provider, model), spent and saved by replay; with
        `include_children`, its child and fan-out runs' too. NotFound for an unknown run."""
        return usage_report(self._tide, run_id, include_children=include_children)

    def state_at(
        self, run_id: str, *, version: int | None = None, label: str | None = None, step: str | None = None,
        stream: str | None = None,
    ) -> StateVersion:
        """The state of `stream` as it was: at a version, at the newest version with a label, or when a step
        completed (exactly one of the three). NotFound when there is no such version.

        Without `stream`, a version or a step reads the run's own stream (`"run"`), and a label is looked up in
        every stream of the run: it finds the snapshot `run.snapshots.create(label, ...)` made in its target's
        stream; InvalidArgument names the streams when the label is in more than one."""
        return state_at(self._tide, run_id, version=version, label=label, step=step, stream=stream)

    def fork(
        self, run_id: str, at_step: str, new_run_id: str | None = None, input: Any = None
    ) -> Run:
        """A new run whose checkpoints up to and including `at_step` are the source run's (with its gate decisions
        and state up to then), linked by a `fork` edge; invoking it replays those and executes the rest. The source
        run is not modified."""
        return fork_run(self._tide, run_id, at_step, new_run_id=new_run_id, input=input)

    def release_step(
        self, run_id: str, step_key: str, *, actor: str | None = None, reason: str | None = None
    ) -> str:
        """Lets a parked step run again on the next invocation. Returns the step id; Conflict if it is not parked."""
        return self._review(run_id, step_key, "release", None, actor, reason)

    def skip_step(
        self, run_id: str, step_key: str, output: Any = None, *, actor: str | None = None, reason: str | None = None
    ) -> str:
        """Completes a parked step with `output` (replayed from then on) without running it. Returns the step id."""
        text = _serde.encode(output, self._tide.serializer, limit=self._tide.max_payload_bytes, what="output",
                             run_id=run_id, step=step_key)
        return self._review(run_id, step_key, "skip", text, actor, reason)

    def _review(
        self, run_id: str, key: str, action: str, output: str | None, actor: str | None, reason: str | None
    ) -> str:
        db = self._tide._open()
        row = db.fetchone("review_step", {"run_id": run_id, "key": key, "action": action, "output": output,
                                                "actor": actor, "reason": reason}, run_id=run_id, step=key)
        assert row is not None
        return str(row["step_id"])


class Tidebase:
    """Durable workflows in your Postgres (sync). Create one per process and share it.

    `dsn` is a libpq connection string, or an `ConnectionPool` you own; when omitted, TIDEBASE_DATABASE_URL,
    then DATABASE_URL, else the embedded PostgreSQL is used. The schema is migrated on first use unless
    `auto_migrate=False`. `lease_seconds` is the run lease length (renewed by a heartbeat every third of it).

    No call waits forever on the database: `connect_timeout` bounds establishing a connection (a wrong DSN fails on
    first use with the target and the reason), and `statement_timeout` bounds each of the library's statements on
    the server, while a client-side deadline (the statement timeout plus half of it, at most 15 s more) abandons a
    connection that stays silent, e.g. behind a stalled proxy. Both surface as DatabaseUnavailable. Seconds; None
    for `statement_timeout` removes both bounds.
    """

    def __init__(
        self,
        dsn: str | ConnectionPool[Any] | None = None,
        *,
        lease_seconds: float = 30.0,
        max_payload_bytes: int = _serde.DEFAULT_MAX_PAYLOAD_BYTES,
        serializer: _serde.Serializer | None = None,
        auto_migrate: bool = True,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = 30.0,
    ) -> None:
        if lease_seconds <= 0:
            raise ConfigurationError("lease_seconds must be positive")
        self.timeouts = Timeouts(connect=connect_timeout, statement=statement_timeout)
        self._dsn = dsn
        self.lease_seconds = lease_seconds
        self.max_payload_bytes = max_payload_bytes
        self.serializer: _serde.Serializer = serializer or _serde.JsonSerializer()
        self.auto_migrate = auto_migrate
        self._pool_sizes = (pool_min_size, pool_max_size)
        self._db: Database | None = None
        self._open_lock = Lock()
        self.runs = Runs(self)
        self.gates = Gates(self)
        self.registry = Registry()
        self.queues = Queues(self)
        self.schedules = Schedules(self)
        self.insights = Insights(self)

    @property
    def owner_label(self) -> str:
        """`host:pid:start` of this process: what the lease owners of this instance say about it."""
        return process_label()

    def workflow(self, name: str) -> Callable[[Any], Any]:
        """`@tide.workflow("research-agent")`: registers the decorated `fn(run, input)` for workers to execute.
        TypeError for a function this API cannot run (an `def` one on the sync `Tidebase`)."""
        register = self.registry.decorator(name)

        def checked(fn: Any) -> Any:
            check_fn(fn, f"workflow {name!r}")
            return register(fn)

        return checked

    def enqueue(self, workflow: str, **options: Any) -> Run:
        """Queues a run of `workflow` for a worker and returns it (see `tidebase.queues.enqueue` for the
        options: input, queue, run_id, dedupe_key, delay, priority, max_attempts, retry_backoff, deadline, metadata,
        recovery_webhook, webhooks). With a `dedupe_key`, an active (queued or running) run of the same queue and key
        is returned instead of a new one, also under concurrent enqueues. Safe to retry with the same run_id."""
        return enqueue(self, workflow, **options)

    def work(self, queues: Any = ("default",), *, concurrency: int = 1, **options: Any) -> int:
        """Runs a worker in this process until SIGTERM/SIGINT (or, with `burst=True`, until nothing is runnable);
        returns how many runs it executed. See `tidebase.worker.Worker` for the options."""
        names = [queues] if isinstance(queues, str) else list(queues)
        return Worker(self, queues=names, concurrency=concurrency, **options).run()

    def __enter__(self) -> Tidebase:
        self._open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the pool this instance opened (a pool you passed in stays open)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _open(self) -> Database:
        if self._db is not None:
            return self._db
        with self._open_lock:
            if self._db is None:
                if isinstance(self._dsn, ConnectionPool):
                    db = Database(self._dsn, owns_pool=False, timeouts=self.timeouts)
                else:
                    db = Database.connect(resolve_dsn(self._dsn), min_size=self._pool_sizes[0],
                                                     max_size=self._pool_sizes[1], timeouts=self.timeouts)
                ensure_schema(db.pool, auto_migrate=self.auto_migrate)
                self._db = db
        return self._db

    def _require_db(self) -> Database:
        if self._db is None:
            raise ConfigurationError("Tidebase is not open")
        return self._db

    def migrate(self) -> int:
        """Applies pending migrations now; returns the schema version."""
        db = self._open()
        return ensure_schema(db.pool, auto_migrate=True)

    def run(
        self,
        name: str,
        workflow: Callable[..., Any],
        *,
        run_id: str | None = None,
        input: Any = None,
        wait: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Runs `workflow(run, input)` durably as run `run_id` of workflow `name`, and returns its result.

        Creates the run (a generated id when `run_id` is None) or resumes it: completed steps are replayed from their
        checkpoints; with `input` omitted a resume uses the stored input. A completed run returns its stored result
        without calling the workflow. Raises InputMismatch (writing nothing) when the run exists under another
        workflow name or with another input; LeaseHeld when another worker holds a live lease (unless `wait`
        seconds are given, in which case it waits up to that long for the lease); RunCancelled for a cancelled
        run. A workflow exception marks the run failed (type, message, traceback stored) and is re-raised.
        """
        check_name(name, "workflow name")
        check_fn(workflow, f"workflow {name!r}")
        run_id = check_run_id(run_id) if run_id is not None else new_run_id()
        enc = self.serializer
        given = input is not None
        input_text = _serde.encode(input if given else {}, enc, limit=self.max_payload_bytes, what="input",
                                   run_id=run_id)
        input_hash = _serde.canonical_hash(json.loads(input_text), enc)
        meta_text = _serde.encode(metadata or {}, enc, limit=self.max_payload_bytes, what="metadata", run_id=run_id)
        lease_ms = int(self.lease_seconds * 1000)
        create = ("create_run", {"run_id": run_id, "workflow": name, "input": input_text, "input_hash": input_hash,
                                 "check_input": given, "metadata": meta_text, "parent_id": None, "lease_ms": lease_ms})
        # A registered workflow can be resumed by a worker: should this process die, the run goes to a queue.
        resume_queue = "default" if name in self.registry else None
        return self._start(run_id, workflow, create, wait, resume_queue=resume_queue)

    def _start(
        self, run_id: str, workflow: Callable[..., Any], create: tuple[str, dict[str, Any]] | None,
        wait: float | None, *, resume_queue: str | None = None,
    ) -> Any:
        """Takes the lease and loads the checkpoints (after `create`, when given) in one round trip, then executes
        the workflow; a completed run returns its stored result. `wait` bounds the wait for a held lease; a lease
        whose holder process has exited on this host is taken over at once (see `tidebase._owners`)."""
        db = self._open()
        owner = new_owner()
        lease_ms = int(self.lease_seconds * 1000)
        acquire: dict[str, Any] = {"run_id": run_id, "owner": owner, "lease_ms": lease_ms, "dead_owner": None,
                                   "resume_queue": resume_queue}
        calls: list[tuple[str, dict[str, Any]]] = [("acquire_run", acquire), ("load_checkpoints", {"run_id": run_id})]
        if create is not None:
            calls.insert(0, create)
        deadline = None if wait is None else time.monotonic() + wait
        delay = 0.02
        # Held from before the lease can exist until the context has stopped: another acquisition of this process
        # must never judge this owner abandoned (tidebase._owners.holder_exited) while it is being taken or used.
        hold(owner)
        try:
            while True:
                try:
                    *_, acquired, checkpoints = db.pipeline(calls, run_id=run_id)
                    break
                except LeaseHeld as exc:
                    if exc.owner != acquire["dead_owner"] and holder_exited(exc.owner):
                        logger.warning("run %s: its lease holder, %s, has exited; taking the run over", run_id,
                                       describe_holder(exc.owner))
                        acquire["dead_owner"] = exc.owner
                        continue
                    if deadline is None or time.monotonic() >= deadline:
                        raise
                    sleep(min(delay, max(0.0, deadline - time.monotonic())))
                    delay = min(delay * 2, 0.5)
            row = acquired[0]
            if row["status"] == "completed":
                return row["result"]
            ctx = RunContext(self, row, {cp["key"]: cp for cp in checkpoints}, owner)
            return self._execute(ctx, workflow)
        finally:
            drop(owner)

    def _execute(self, ctx: RunContext, workflow: Callable[..., Any]) -> Any:
        db = self._require_db()
        ids = {"run_id": ctx.run_id, "token": ctx.token}
        ctx._start_heartbeat(self.lease_seconds / 3)
        try:
            try:
                result = call(workflow, ctx, ctx.input)
                text = _serde.encode(result, self.serializer, limit=self.max_payload_bytes, what="result",
                                     run_id=ctx.run_id)
            except _NO_STOP:
                raise  # fenced or cancelled: this worker may not record anything
            except BaseException as exc:
                try:
                    error = _serde.encode(error_payload(exc), _serde.JsonSerializer(), limit=ERROR_LIMIT,
                                          what="error", run_id=ctx.run_id)
                    db.fetchone("fail_run", {**ids, "error": error, "failure_class": None}, run_id=ctx.run_id)
                except Exception as record_exc:  # noqa: BLE001 - the workflow's own exception is what the caller must see
                    exc.add_note(f"tidebase: the failure could not be recorded: {record_exc!r}")
                raise
            db.fetchone("complete_run", {**ids, "result": text}, run_id=ctx.run_id)
            return json.loads(text)
        finally:
            ctx._stop()


def _not_found(run_id: str) -> NotFound:
    return NotFound(f"run {run_id!r} not found", run_id=run_id)
