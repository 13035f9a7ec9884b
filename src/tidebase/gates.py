# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""Human approval gates: a run asks a question, waits for the answer, and replays that answer on every resume.

A gate is identified by (run, name). `run.gate("approve", ...)` creates it the first time, fenced by the run's lease
token (a zombie or cancelled run is refused) and appending `gate.created`, and finds the same gate on every later
call, also after a crash or a suspension. It is resolved exactly once, by `tide.gates.resolve(...)`: under its run's
row lock, SQL picks the one winner among concurrent resolvers, and every other one gets GateAlreadyResolved carrying
the winning decision and actor, also when the winner's decision has since resumed and finished the run (a decided
gate is reported before its run's state). Every `run.gate(...)` after that returns the recorded decision, so a
resumed run takes the branch it would have taken.

Waiting has two modes:

- Blocking (the default): the run keeps its lease (the heartbeat renews it) and one pool connection LISTENs on the
  `tidebase_gates` doorbell for the whole wait. The notification only wakes the waiter; the gate row is the truth.
  It is re-read after LISTEN (so a resolution between creating the gate and listening is not missed), after every
  ring of this gate, and at least every POLL_INTERVAL seconds (so a lost notification costs latency, not
  correctness). A lost lease or a cancelled run ends the wait.
- Suspending (`suspend=True`, or when `timeout` passes): the run releases its lease, moves to `waiting` and
  RunSuspended is raised. Invoking the run again with the same id replays its steps and returns the recorded decision
  at the gate (or waits again while it is still pending).

The resolve token (128 random bits) is returned once, on the Gate of the call that created the gate, and in that
gate's gate.created webhook deliveries (its own channels and the run's webhooks); only its SHA-256 is stored in the
gates table, and a presented token is compared in constant time. Resolving without a token is an operator
action: authorising operators is the caller's business (the server's API key), not this module's.

Deliberately not here: capabilities, and any server-side expiry of a gate (a timeout only suspends the waiting run;
the gate stays pending). Cancelling a run marks its pending gates `canceled`; a waiter sees the run cancelled and
raises RunCancelled, and a later resolve raises GateAlreadyResolved with decision `canceled` (the cancel's actor).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, LiteralString

from psycopg.rows import dict_row

from . import _serde
from ._base import check_name
from ._translate import translated
from .errors import Forbidden, InvalidArgument, NotFound, RunCancelled, RunSuspended, TidebaseError
from .queues import webhooks_param

if TYPE_CHECKING:
    from psycopg import Connection

    from ._db import Database
    from .engine import Tidebase
    from .run import RunContext

Row = dict[str, Any]

GATE_STATUSES = ("pending", "approved", "rejected", "canceled")
DECISIONS = ("approved", "rejected", "canceled")
# Upper bound on the time between two reads of a waited gate when no notification arrives.
POLL_INTERVAL = 1.0


@dataclass(frozen=True)
class GateDecision:
    """The decision a gate was resolved with: what `run.gate(...)` returns, identical on every resume."""

    gate_id: str
    name: str
    decision: str
    actor: str | None
    payload: Any

    @property
    def approved(self) -> bool:
        """True when the decision is `approved`."""
        return self.decision == "approved"


@dataclass(frozen=True)
class Gate:
    """An approval gate of a run. `status` is `pending` until it is resolved, then equals `decision`.

    `token` (the resolve token) is set only on the Gate returned by the call that created the gate, and is None
    everywhere else: it cannot be read back. `run_status` is the status of the gate's run when the gate was read.
    """

    id: str
    run_id: str
    name: str
    prompt: str
    data: Any
    status: str
    decision: str | None
    actor: str | None
    payload: Any
    created_at: datetime
    resolved_at: datetime | None
    run_status: str | None = None
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: Row, token: str | None = None) -> Gate:
        return cls(
            id=row["id"], run_id=row["run_id"], name=row["name"], prompt=row["prompt"], data=row["data"],
            status=row["status"], decision=row["decision"], actor=row["actor"], payload=row["payload"],
            created_at=row["created_at"], resolved_at=row["resolved_at"], run_status=row.get("run_status"),
            token=token,
        )

    @property
    def pending(self) -> bool:
        """True while the gate has no decision."""
        return self.status == "pending"


def new_gate_id() -> str:
    """A fresh gate id: `gate_` + 32 lowercase hex digits."""
    return "gate_" + uuid.uuid4().hex


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_text(value: str, what: str) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise InvalidArgument(f"invalid {what}: a string without U+0000 is required")
    return value


def _decision_of(gate: Gate) -> GateDecision:
    assert gate.decision is not None  # a resolved gate has a decision (CHECK constraint)
    return GateDecision(gate.id, gate.name, gate.decision, gate.actor, gate.payload)


def _gate_not_found(gate_id: str) -> NotFound:
    return NotFound(f"gate {gate_id!r} not found", gate_id=gate_id)


def _get_gate(db: Database, gate_id: str) -> Gate:
    row = db.fetchone("get_gate", {"gate_id": gate_id}, gate_id=gate_id)
    if row is None:
        raise _gate_not_found(gate_id)
    return Gate.from_row(row)


class RunGates:
    """The gates of one run, as its workflow sees them (`run.gates`; `run.gate(...)` is `run.gates.wait(...)`)."""

    def __init__(self, run: RunContext) -> None:
        self._run = run

    def begin(
        self, name: str, prompt: str = "", *, data: Any = None, channels: list[dict[str, Any]] | None = None
    ) -> Gate:
        """Creates gate `name` of this run (appending gate.created), or returns the existing gate unchanged (the
        `prompt`, `data` and `channels` given then are ignored, and nothing is written). Only the Gate of the
        creating call carries the resolve `token`; the gate.created webhook deliveries (to `channels`, webhooks
        `{"url", "secret"?, "events"?}` of this gate, and to the run's webhooks) carry it too, for approvers outside
        the system. Fenced by the run's lease: raises LeaseLost or RunCancelled when this worker may no longer
        write, PayloadError for `data` that cannot be stored. Safe to retry: a gate is created once."""
        run = self._run
        run._check_alive()
        check_name(name, "gate name")
        _check_text(prompt, "gate prompt")
        tide = run.tide
        resolve_token = secrets.token_hex(16)
        params = {
            "run_id": run.run_id, "token": run.token, "name": name, "gate_id": new_gate_id(), "prompt": prompt,
            "data": None if data is None else _serde.encode(data, tide.serializer, limit=tide.max_payload_bytes,
                                                            what="gate data", run_id=run.run_id),
            "token_hash": _token_hash(resolve_token), "capability": None,
            "channels": webhooks_param(channels), "resolve_token": resolve_token,
        }
        row = run._write("begin_gate", params, None)
        assert row is not None  # begin_gate returns the gate or raises
        # The fence admitted the write, so the run was running under this context's lease.
        return Gate.from_row({**row, "run_status": "running"}, resolve_token if row["created"] else None)

    def get(self, gate_id: str) -> Gate:
        """Gate `gate_id` of this run. NotFound when it does not exist or belongs to another run."""
        gate = _get_gate(self._run._db, gate_id)
        if gate.run_id != self._run.run_id:
            raise _gate_not_found(gate_id)
        return gate

    def wait(
        self, name: str, prompt: str = "", *, data: Any = None,
        timeout: float | None = None,  # noqa: ASYNC109, RUF100 - the gate's wait budget, the same in the sync twin
        suspend: bool = False, channels: list[dict[str, Any]] | None = None,
    ) -> GateDecision:
        """Returns the decision of gate `name`, creating the gate (see `begin`) if this run has none yet.

        A resolved gate returns its recorded decision at once, on first execution and on every resume. A pending
        gate, with `suspend=True`, suspends the run at once: the lease is released, the run moves to `waiting`, and
        RunSuspended is raised (invoke the run again to resume). Otherwise this blocks until a decision arrives,
        keeping the lease; when `timeout` seconds (None: no limit) pass first, the run is suspended the same way.
        Raises RunCancelled when the run is cancelled during the wait, and LeaseLost when its lease is lost.
        """
        if timeout is not None and timeout < 0:
            raise InvalidArgument("timeout must be >= 0 seconds, or None to wait without limit")
        run = self._run
        gate = self.begin(name, prompt, data=data, channels=channels)
        if not gate.pending:
            return _decision_of(gate)
        if not suspend:
            decided = self._await_decision(gate, None if timeout is None else time.monotonic() + timeout)
            if decided is not None:
                return decided
        run._write("suspend_run", {"run_id": run.run_id, "token": run.token, "gate_id": gate.id}, None)
        suspended = RunSuspended(
            f"run {run.run_id!r} is suspended waiting for gate {name!r} ({gate.id}); invoke it again to resume once "
            "the gate is resolved", run_id=run.run_id, gate_id=gate.id,
        )
        run._stopped = suspended  # the lease is released: this context may not write any more
        raise suspended

    def _await_decision(self, gate: Gate, deadline: float | None) -> GateDecision | None:
        """The gate's decision once it is resolved, or None when the `deadline` (time.monotonic) passes first. Holds
        one pool connection, listening on the doorbell, for the duration of the wait."""
        run = self._run
        queries = run._db.queries
        context = {"run_id": run.run_id, "gate_id": gate.id}
        with run._db.pool.connection() as conn:
            _fetch(conn, queries["listen_gates"], {}, context)
            try:
                while True:
                    row = _fetch(conn, queries["get_gate"], {"gate_id": gate.id}, context)
                    if row is None:  # deleted with its run
                        raise _gate_not_found(gate.id)
                    current = Gate.from_row(row)
                    if current.run_status == "cancelled":  # cancelled wins: no user code runs after a cancel
                        cancelled = RunCancelled(f"run {run.run_id!r} was cancelled while waiting for gate "
                                                 f"{gate.name!r}", run_id=run.run_id, gate_id=gate.id)
                        run._stopped = cancelled
                        raise cancelled
                    if not current.pending:
                        return _decision_of(current)
                    run._check_alive()
                    if deadline is not None and time.monotonic() >= deadline:
                        return None
                    _doorbell(conn, gate.id, deadline, context)
            finally:
                _unlisten(conn, queries["unlisten_gates"], context)


class Gates:
    """Gates across runs, for the people and services that decide them (`tide.gates`)."""

    def __init__(self, tide: Tidebase) -> None:
        self._tide = tide

    def resolve(
        self, gate_id: str, decision: str, *, actor: str | None = None, payload: Any = None, token: str | None = None
    ) -> Gate:
        """Resolves gate `gate_id` with `decision` (`approved`, `rejected` or `canceled`), exactly once; returns the
        resolved gate (its `token` is None) and wakes the run waiting for it.

        With `token`, it must be the gate's resolve token (else Forbidden); without it the caller resolves as an
        operator. Raises InvalidArgument for an unknown decision, NotFound for an unknown gate, GateAlreadyResolved
        (with the winner's `decision` and `actor`) when the gate already has a decision, whatever its run did since
        (completed, failed, cancelled: a cancelled run's gates have decision `canceled`), also for the losers of
        concurrent resolves; and RunCompleted for a still pending gate of a completed run. Every refusal writes
        nothing. Not safe to retry blindly: a retry of a resolve that did commit gets GateAlreadyResolved.
        """
        if decision not in DECISIONS:
            raise InvalidArgument(f"invalid gate decision {decision!r}; one of {DECISIONS}")
        if actor is not None:
            check_name(actor, "actor")
        tide = self._tide
        payload_text = None if payload is None else _serde.encode(
            payload, tide.serializer, limit=tide.max_payload_bytes, what="gate payload")
        db = tide._open()
        if token is not None:
            row = db.fetchone("get_gate", {"gate_id": gate_id}, gate_id=gate_id)
            if row is None:
                raise _gate_not_found(gate_id)
            if not hmac.compare_digest(_token_hash(token), row["token_hash"]):
                raise Forbidden(f"the token does not match the resolve token of gate {gate_id!r}", gate_id=gate_id)
        params = {"gate_id": gate_id, "decision": decision, "actor": actor, "payload": payload_text}
        resolved, current = db.pipeline(
            [("resolve_gate", params), ("get_gate", {"gate_id": gate_id})], gate_id=gate_id)
        return Gate.from_row((current or resolved)[0])  # read back with its run's status, in the same round trip

    def get(self, gate_id: str) -> Gate:
        """Gate `gate_id` with its run's status (`run_status`). NotFound when it does not exist."""
        return _get_gate(self._tide._open(), gate_id)

    def list(
        self, status: str | None = "pending", run_id: str | None = None, limit: int = 100
    ) -> builtins.list[Gate]:
        """Gates with `status`, oldest first: across all runs (the review queue), or of run `run_id` only, where
        `status=None` means any status. An unknown run has no gates (an empty list)."""
        if status is not None and status not in GATE_STATUSES:
            raise InvalidArgument(f"unknown gate status {status!r}; one of {GATE_STATUSES}")
        if status is None and run_id is None:
            raise InvalidArgument("status=None (any status) requires a run_id")
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit must be between 1 and 1000")
        db = self._tide._open()
        if run_id is None:
            rows = db.fetchall("list_gates", {"status": status, "limit": limit})
        else:
            rows = db.fetchall("list_gates_of_run", {"run_id": run_id, "status": status, "limit": limit},
                                     run_id=run_id)
        return [Gate.from_row(r) for r in rows]


# -- the waiter's own connection ---------------------------------------------------------------------------------------


def _fetch(conn: Connection[Any], query: LiteralString, params: Row, context: Row) -> Row | None:
    """Runs one statement on the waiter's connection; returns its first row (None when it returns no rows)."""
    with translated(**context):
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            row: Row | None = cur.fetchone() if cur.description is not None else None
        # A borrowed pool may hand out connections in transaction mode: LISTEN only takes effect, and notifications
        # are only delivered, outside a transaction.
        if not conn.autocommit:
            conn.commit()
    return row


def _doorbell(conn: Connection[Any], gate_id: str, deadline: float | None, context: Row) -> None:
    """Waits until this gate's doorbell rings, the next poll tick, or the deadline, whichever comes first.
    Notifications for other gates are consumed without waking the waiter."""
    until = time.monotonic() + POLL_INTERVAL
    if deadline is not None:
        until = min(until, deadline)
    rung = False
    with translated(**context):
        while not rung and (left := until - time.monotonic()) > 0:
            # Run the generator to its end (stop_after) instead of leaving it early: an abandoned async generator
            # keeps the connection's lock until it is garbage-collected.
            for note in conn.notifies(timeout=left, stop_after=1):
                rung = rung or note.payload == gate_id


def _unlisten(conn: Connection[Any], query: LiteralString, context: Row) -> None:
    """Stops listening before the connection goes back to the pool; a connection that cannot be cleaned is closed,
    so that the pool discards it instead of handing out a session that still listens."""
    try:
        _fetch(conn, query, {}, context)
    except TidebaseError:
        conn.close()
