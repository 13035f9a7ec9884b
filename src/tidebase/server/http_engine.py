"""The engine operations of the HTTP protocol (docs/http-api.md), over the same SQL functions as the library.

HTTP clients fence by lease *owner* (the `leaseOwner` they got from begin), where the library fences by token. The
statements this module runs resolve the owner into the token of the lease it holds (`tidebase.token_of`, in
`sql/functions/99_http_door.sql`) and then call the functions the library calls: create and acquire, the step
decision, step completion and failure, state, gates, children, run completion and failure. A run begun through
either door is therefore fenced, decided and recorded the same way, and either door can resume what the other began.
The step's resume contract (`ResumeContract.from_options`) and its channels (`tidebase.channel_entries`) are encoded
the library's way too. This module only sequences statements and returns rows (dicts of columns); it makes no
decision a concurrent writer could invalidate, and it knows nothing of HTTP (the server renders the rows).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.types.numeric import Int8

from tidebase.core import observe
from tidebase.core import serde as _serde
from tidebase.core.channels import webhooks_param
from tidebase.core.db_async import AsyncDatabase, Params, Row
from tidebase.core.rules import ResumeContract
from tidebase.errors import (
    DatabaseUnavailable,
    GateAlreadyResolved,
    GateNotFound,
    InvalidToken,
    NoRecoveryWebhook,
    RunCancelled,
    RunNotFound,
    ScheduleNotFound,
    StepNotFound,
    TransactionAborted,
)

_JSON = _serde.JsonSerializer()
RETRIES = 3  # tries of a statement the database aborted for a conflict with a concurrent one


def dumps(value: Any) -> str:
    """JSON text of a value for a jsonb parameter."""
    return _serde.dumps(value, _JSON)


def input_hash(value: Any) -> str:
    """The input hash (docs/http-api.md#input-hash) of a run or child input (absent or null counts as `{}`)."""
    return _serde.canonical_hash({} if value is None else value, _JSON)


def resume_contract(options: dict[str, Any]) -> dict[str, Any]:
    """The resume contract of a step from its `options` (docs/http-api.md#failure-classification), in the form the
    library stores too (shown with every field of docs/http-api.md#object-resume-contract by `render.contract` and,
    in events, by `tidebase.contract_document`)."""
    return ResumeContract.from_options(options).as_json()


def _bigint(value: Any) -> Any:
    """An int parameter sent as int8 whatever its size (psycopg picks int2/int4/numeric by value otherwise)."""
    return None if value is None else Int8(value)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class RunDetail:
    """Everything `GET /runs/:id` shows, read from one snapshot."""

    run: Row
    steps: list[Row]
    streams: list[Row]
    versions: list[Row]
    edges: list[Row]
    children: list[Row]
    gates: list[Row]
    usage: list[Row]
    events: list[Row]
    recoveries: list[Row]
    deliveries: list[Row]


class AsyncWire:
    """The HTTP protocol's operations over one database. `lease_ms` is the lease length `L` of runs begun here;
    `max_auto_recoveries` caps the automatic recovery webhooks of a run that fails here."""

    def __init__(self, db: AsyncDatabase, *, lease_ms: int = 60000, max_auto_recoveries: int = 10) -> None:
        self.db = db
        self.lease_ms = lease_ms
        self.max_auto_recoveries = max_auto_recoveries

    async def _one(self, name: str, params: Params) -> Row:
        rows = await self._all(name, params)
        if not rows:
            raise RunNotFound(f"run {params.get('run_id')!r} not found")
        return rows[0]

    async def _all(self, name: str, params: Params) -> list[Row]:
        """Runs one statement (its own transaction); a serialization failure or deadlock is retried (3 tries)."""
        for attempt in range(1, RETRIES + 1):
            try:
                return await self.db.fetchall(name, params, run_id=params.get("run_id"))
            except TransactionAborted as exc:
                if attempt == RETRIES:
                    raise DatabaseUnavailable(f"database busy: {exc}") from exc
        raise AssertionError("unreachable")

    async def _snapshot(self, calls: Sequence[tuple[str, Params]]) -> list[list[Row]]:
        return await self.db.snapshot(calls)

    # Runs ----------------------------------------------------------------------------------------------------------

    async def create_run(
        self, run_id: str, workflow: str, input: Any, metadata: dict[str, Any], *,
        channels: list[dict[str, Any]] | None = None, recovery_webhook: str | None = None,
    ) -> tuple[Row, bool]:
        """Creates the run with its channels (webhook specs) and recovery webhook, or returns the existing one
        unchanged (then channels and webhook are ignored); `created` says which."""
        value = {} if input is None else input
        row = await self._one("http_create_run", {
            "run_id": run_id, "workflow": workflow, "input": dumps(value), "input_hash": input_hash(value),
            "metadata": dumps(metadata), "lease_ms": self.lease_ms, "webhooks": webhooks_param(channels),
            "recovery_webhook": recovery_webhook})
        created = bool(row.pop("created"))
        return row, created

    async def get_run(self, run_id: str) -> Row:
        return await self._one("get_run", {"run_id": run_id})

    async def require_run(self, run_id: str) -> Row:
        """The run's id and status; RunNotFound when it does not exist."""
        return await self._one("http_run_exists", {"run_id": run_id})

    async def list_runs(self, status: str | None, workflow: str | None, queue: str | None, limit: int) -> list[Row]:
        return await self._all("http_list_runs", {"status": status, "workflow": workflow, "queue": queue,
                                                  "limit": limit})

    async def detail(self, run_id: str) -> RunDetail:
        p = {"run_id": run_id}
        names = ["get_run", "get_steps", "http_state_streams", "http_state_versions", "edges_of_run",
                 "http_child_runs", "http_gates_of_run", "http_usage_of_run", "http_all_events",
                 "recovery_webhooks_of_run", "channel_deliveries_of_run"]
        params: dict[str, Params] = {"http_state_versions": {**p, "stream": None, "labeled": False}}
        rows = await self._snapshot([(n, params.get(n, p)) for n in names])
        if not rows[0]:
            raise RunNotFound(f"run {run_id!r} not found")
        return RunDetail(rows[0][0], *rows[1:])

    async def begin(self, run_id: str, owner: str) -> Row:
        row = await self._one("http_begin", {"run_id": run_id, "owner": owner, "lease_ms": self.lease_ms})
        if row["status"] == "cancelled":  # cancelled just now for its deadline (committed)
            raise RunCancelled(f"run {run_id!r} is cancelled", reason=row["cancel_reason"], run_id=run_id)
        if row["status"] == "running":  # not a completed run returned as it is
            observe.observer.door_run(row, "started")
        return row

    async def heartbeat(self, run_id: str, owner: str) -> Row:
        return await self._one("http_heartbeat", {"run_id": run_id, "owner": owner})

    async def complete(self, run_id: str, owner: str | None, result: Any) -> Row:
        row = await self._one("http_complete_run", {"run_id": run_id, "owner": owner, "result": dumps(result)})
        if row.pop("completed_now"):  # a retry of a completion is not a transition
            observe.observer.door_run(row, "completed")
        return row

    async def fail(self, run_id: str, owner: str | None, error: Any, failure_class: str | None) -> Row:
        row = await self._one("http_fail_run", {"run_id": run_id, "owner": owner, "error": dumps(error),
                                                "failure_class": failure_class,
                                                "max_auto_recoveries": self.max_auto_recoveries})
        observe.observer.door_run(row, observe.FAILED_AS.get(row["status"], "failed"))
        return row

    async def cancel(self, run_id: str, reason: str | None, actor: str | None) -> Row:
        return await self._one("cancel_run", {"run_id": run_id, "reason": reason, "actor": actor})

    async def recover(self, run_id: str, reason: str) -> Row:
        """Schedules a manual run.resume webhook; returns its outbox row (the RecoveryAttempt)."""
        rows = await self._all("request_recovery", {"run_id": run_id, "reason": reason})
        if not rows:
            raise NoRecoveryWebhook("run has no recoveryWebhook configured")
        return rows[0]

    async def create_child(
        self, parent_id: str, edge_name: str, workflow: str, input: Any, edge_type: str,
        edge_metadata: dict[str, Any], child_id: str, metadata: dict[str, Any], *,
        channels: list[dict[str, Any]] | None = None, recovery_webhook: str | None = None,
    ) -> tuple[Row, Row, bool]:
        """Creates the child of (parent, edge name) once; returns (child run, edge, created)."""
        value = {} if input is None else input
        row = await self._one("http_create_child", {
            "parent_id": parent_id, "edge_name": edge_name, "edge_type": edge_type,
            "edge_metadata": dumps(edge_metadata), "child_id": child_id, "workflow": workflow,
            "input": dumps(value), "input_hash": input_hash(value), "lease_ms": self.lease_ms,
            "metadata": dumps(metadata), "webhooks": webhooks_param(channels), "recovery_webhook": recovery_webhook})
        edge = row.pop("edge")
        edge["created_at"] = datetime.fromisoformat(edge["created_at"])
        created = bool(row.pop("created"))
        return row, edge, created

    # Steps ---------------------------------------------------------------------------------------------------------

    async def begin_step(
        self, run_id: str, owner: str | None, name: str, hash_: str, input: Any, options: dict[str, Any],
    ) -> tuple[str, Row | None]:
        row = await self._one("http_begin_step", {
            "run_id": run_id, "owner": owner, "name": name, "input_hash": hash_,
            "input": dumps({} if input is None else input), "options": dumps(options),
            "contract": dumps(resume_contract(options))})
        action = str(row.pop("action"))
        return action, (row if row.get("id") is not None else None)

    async def step_by_name(self, run_id: str, name: str) -> Row | None:
        rows = await self._all("http_step_by_name", {"run_id": run_id, "name": name})
        return rows[0] if rows else None

    async def get_step(self, run_id: str, step_id: str) -> Row | None:
        rows = await self._all("http_step", {"run_id": run_id, "step_id": step_id})
        return rows[0] if rows else None

    async def complete_step(self, run_id: str, step_id: str, owner: str, output: Any) -> Row:
        return await self._one("http_complete_step", {"run_id": run_id, "step_id": step_id, "owner": owner,
                                                      "output": dumps(output)})

    async def fail_step(
        self, run_id: str, step_id: str, owner: str, error: Any, retryable: bool, decision: str | None,
    ) -> Row:
        return await self._one("http_fail_step", {"run_id": run_id, "step_id": step_id, "owner": owner,
                                                  "error": dumps(error), "retryable": retryable,
                                                  "decision": decision})

    async def review_step(
        self, run_id: str, step_id: str, action: str, output: Any, actor: str | None, reason: str | None,
    ) -> Row:
        return await self._one("http_review_step", {"run_id": run_id, "step_id": step_id, "action": action,
                                                    "output": dumps(output), "actor": actor, "reason": reason})

    # State, snapshots, usage ---------------------------------------------------------------------------------------

    async def write_state(
        self, run_id: str, mode: str, stream: str, value: Any, *, label: str | None = None,
        reason: str | None = None, importance: str | None = None, metadata: dict[str, Any] | None = None,
        created_by: str | None = None, target: tuple[str, str] | None = None,
    ) -> tuple[Row, str]:
        """Writes a version (mode set, patch, save or snapshot); returns (version row, stream id)."""
        row = await self._one("write_state", {
            "run_id": run_id, "token": None, "stream": stream, "mode": mode,
            "value": None if mode == "save" else dumps(value), "label": label, "reason": reason,
            "importance": importance, "metadata": dumps(metadata or {}), "created_by": created_by,
            "step_key": None, "target_type": target[0] if target else None,
            "target_id": target[1] if target else None})
        stream_id = (await self._one("http_stream_id", {"run_id": run_id, "stream": stream}))["id"]
        return row, str(stream_id)

    async def versions(self, run_id: str, stream: str | None, labeled: bool) -> list[Row]:
        rows = await self._snapshot([("http_run_exists", {"run_id": run_id}),
                                     ("http_state_versions", {"run_id": run_id, "stream": stream,
                                                              "labeled": labeled})])
        if not rows[0]:
            raise RunNotFound(f"run {run_id!r} not found")
        return rows[1]

    async def snapshots(self, run_id: str) -> list[Row]:
        rows = await self._snapshot([("http_run_exists", {"run_id": run_id}), ("http_snapshots", {"run_id": run_id})])
        if not rows[0]:
            raise RunNotFound(f"run {run_id!r} not found")
        return rows[1]

    async def record_usage(self, run_id: str, step_id: str | None, fields: dict[str, Any]) -> Row:
        step_key = None
        if step_id is not None:
            await self.require_run(run_id)
            found = await self._all("http_step_key", {"run_id": run_id, "step_id": step_id})
            if not found:
                raise StepNotFound(f"step {step_id!r} is not a step of run {run_id!r}")
            step_key = found[0]["key"]
        cost = fields.get("cost_usd")
        row = await self._one("record_usage", {
            "run_id": run_id, "usage_id": "use_" + secrets.token_hex(16), "step_key": step_key,
            **fields, "metadata": dumps(fields.get("metadata") or {}),
            "quantity": None if fields.get("quantity") is None else float(fields["quantity"]),
            "cost_usd": None if cost is None else Decimal(repr(cost)),
            **{k: _bigint(fields.get(k)) for k in ("input_tokens", "output_tokens", "total_tokens")}})
        row["step_id"] = step_id
        return row

    # Gates ---------------------------------------------------------------------------------------------------------

    async def begin_gate(
        self, run_id: str, name: str, prompt: str, data: Any, capability: Any, channels: list[Any],
    ) -> tuple[Row, bool, str | None]:
        """Opens or rejoins gate (run, name); returns (gate, created, the resolve token when created here)."""
        token = secrets.token_hex(16)
        row = await self._one("begin_gate", {
            "run_id": run_id, "token": None, "name": name, "gate_id": "gate_" + secrets.token_hex(16),
            "prompt": prompt, "data": dumps({} if data is None else data), "token_hash": token_hash(token),
            "capability": None if capability is None else dumps(capability), "channels": dumps(channels),
            "resolve_token": token})
        created = bool(row.pop("created"))
        return row, created, token if created else None

    async def get_gate(self, run_id: str, gate_id: str) -> Row:
        rows = await self._snapshot([("http_run_exists", {"run_id": run_id}),
                                     ("http_gate", {"run_id": run_id, "gate_id": gate_id})])
        if not rows[0]:
            raise RunNotFound(f"run {run_id!r} not found")
        if not rows[1]:
            raise GateNotFound(f"gate {gate_id!r} of run {run_id!r} not found")
        return rows[1][0]

    async def resolve_gate(
        self, run_id: str, gate_id: str, decision: str, token: str | None, actor: str | None, payload: Any,
    ) -> Row:
        """Resolves the gate exactly once; the same decision again returns it unchanged (a safe retry)."""
        gate = await self._one("http_gate_for_resolve", {"run_id": run_id, "gate_id": gate_id})
        if token is not None and not hmac.compare_digest(token_hash(token), gate["token_hash"]):
            raise InvalidToken("invalid resolve token")
        try:
            row = await self._one("resolve_gate", {"gate_id": gate_id, "decision": decision, "actor": actor,
                                                   "payload": dumps({} if payload is None else payload)})
            observe.observer.gate_resolved(row["created_at"], row["resolved_at"])  # tidebase_gate_wait_seconds
            return row
        except GateAlreadyResolved as exc:
            if exc.decision == decision:
                return await self.get_gate(run_id, gate_id)
            raise

    # Queues and schedules -----------------------------------------------------------------------------------------

    async def enqueue(
        self, queue: str, workflow: str, input: Any, metadata: dict[str, Any], *, run_id: str,
        channels: list[dict[str, Any]] | None, recovery_webhook: str | None, dedupe_key: str | None,
        run_at: datetime | None, delay_ms: int, max_attempts: int, priority: int, deadline_ms: int | None,
    ) -> tuple[Row, bool]:
        """Queues a run, or returns the active run of (queue, dedupe key); (run, deduplicated)."""
        value = {} if input is None else input
        row = await self._one("enqueue_run", {
            "run_id": run_id, "workflow": workflow, "input": dumps(value), "input_hash": input_hash(value),
            "metadata": dumps(metadata), "queue": queue, "priority": priority, "dedupe_key": dedupe_key,
            "run_at": run_at, "delay_ms": _bigint(delay_ms), "max_attempts": max_attempts, "backoff_ms": None,
            "deadline": None, "deadline_ms": _bigint(deadline_ms), "lease_ms": self.lease_ms,
            "webhooks": webhooks_param(channels), "recovery_webhook": recovery_webhook, "recovery_secret": None})
        created = bool(row.pop("created"))
        return row, not created

    async def claim(self, queues: list[str], owner: str, limit: int) -> list[Row]:
        return await self._all("http_claim", {"owner": owner, "queues": queues, "limit": limit,
                                              "lease_ms": self.lease_ms})

    async def queue_stats(self) -> list[Row]:
        return await self._all("queue_stats", {})

    async def configure_queue(self, queue: str, fields: dict[str, Any]) -> Row:
        """Upserts the queue's config: a key absent from `fields` keeps its value, a key set to None clears it."""
        return await self._one("http_configure_queue", {
            "queue": queue, "concurrency": fields.get("concurrency"), "rate": fields.get("ratePerMinute"),
            "invoke_url": fields.get("invokeUrl"), "set_concurrency": "concurrency" in fields,
            "set_rate": "ratePerMinute" in fields, "set_invoke_url": "invokeUrl" in fields})

    async def set_schedule(
        self, name: str, cron: str, workflow: str, input: Any, queue: str, max_attempts: int, enabled: bool,
        next_run_at: datetime,
    ) -> Row:
        value = {} if input is None else input
        return await self._one("set_schedule", {
            "name": name, "cron": cron, "workflow": workflow, "input": dumps(value), "input_hash": input_hash(value),
            "queue": queue, "priority": 0, "max_attempts": max_attempts, "enabled": enabled,
            "next_fire_at": next_run_at})

    async def list_schedules(self) -> list[Row]:
        return await self._all("list_schedules", {})

    async def delete_schedule(self, name: str) -> None:
        if not await self._all("delete_schedule", {"name": name}):
            raise ScheduleNotFound(f"schedule {name!r} not found")

    async def now(self) -> datetime:
        """The database clock."""
        value: datetime = (await self._one("db_now", {}))["now"]
        return value

    # Events and health ---------------------------------------------------------------------------------------------

    async def append_event(self, run_id: str, owner: str | None, type_: str, payload: Any) -> int:
        """Appends a custom event under the owner's lease (tidebase.append_event, as the library's run.emit); returns
        its seq. No route of docs/http-api.md serves it yet: it is the door's half of the library's custom events."""
        row = await self._one("http_append_event", {"run_id": run_id, "owner": owner, "type": type_,
                                                    "payload": dumps({} if payload is None else payload)})
        return int(row["seq"])

    async def events_after(self, run_id: str, after: int, limit: int = 500) -> list[Row]:
        return await self._all("events_after", {"run_id": run_id, "after": after, "limit": limit})

    async def health(self) -> int:
        row = await self._one("http_health", {})
        return int(row["version"] or 0)
