"""Read-only records returned by the public API: frozen dataclasses, each built from a database row in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Row = dict[str, Any]

RUN_STATUSES = ("pending", "queued", "running", "waiting", "manual_review", "completed", "failed", "cancelled")
TERMINAL_STATUSES = ("completed", "cancelled")


@dataclass(frozen=True)
class Step:
    """One step checkpoint of a run. `key` is the name plus its occurrence (`search`, `search#2`, ...)."""

    id: str
    run_id: str
    key: str
    name: str
    occurrence: int
    status: str
    input_hash: str
    output: Any
    error: Any
    contract: dict[str, Any]
    resume_decision: str | None
    attempt: int
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Step:
        return cls(
            id=row["id"], run_id=row["run_id"], key=row["key"], name=row["name"], occurrence=row["occurrence"],
            status=row["status"], input_hash=row["input_hash"], output=row["output"], error=row["error"],
            contract=row["contract"], resume_decision=row["resume_decision"], attempt=row["attempt"],
            started_at=row["started_at"], completed_at=row["completed_at"], created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True)
class Edge:
    """A parent -> child link: `edge_type` is `child`, `fanout` or `fork`; `name` is unique per parent."""

    id: str
    parent_run_id: str
    child_run_id: str
    name: str
    edge_type: str
    metadata: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Edge:
        return cls(
            id=row["id"], parent_run_id=row["parent_run_id"], child_run_id=row["child_run_id"], name=row["name"],
            edge_type=row["edge_type"], metadata=row["metadata"], created_at=row["created_at"],
        )


@dataclass(frozen=True)
class Run:
    """A run: its status, input, result or error, lease and timestamps; `steps` and `children` (edges where it is the
    parent) when read with `tide.runs.get`. `updated_at` is when the run's own record last changed (status, lease
    holder, attempt); its steps and events carry their own times."""

    id: str
    workflow: str
    status: str
    input: Any
    input_hash: str
    result: Any
    error: Any
    failure_class: str | None
    metadata: dict[str, Any]
    parent_id: str | None
    attempt: int
    lease_owner: str | None
    fencing_token: int
    lease_expires_at: datetime | None
    cancel_reason: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    steps: tuple[Step, ...] = field(default=())
    children: tuple[Edge, ...] = field(default=())
    queue: str | None = None
    available_at: datetime | None = None  # when a queued run became (or becomes) claimable

    @classmethod
    def from_row(cls, row: Row, steps: tuple[Step, ...] = (), children: tuple[Edge, ...] = ()) -> Run:
        return cls(
            id=row["id"], workflow=row["workflow"], status=row["status"], input=row["input"],
            input_hash=row["input_hash"], result=row["result"], error=row["error"],
            failure_class=row["failure_class"], metadata=row["metadata"], parent_id=row["parent_id"],
            attempt=row["attempt"], lease_owner=row["lease_owner"], fencing_token=row["fencing_token"],
            lease_expires_at=row["lease_expires_at"], cancel_reason=row["cancel_reason"],
            created_at=row["created_at"], updated_at=row["updated_at"], started_at=row["started_at"],
            completed_at=row["completed_at"], steps=steps, children=children, queue=row.get("queue"),
            available_at=row.get("available_at"),
        )

    @property
    def terminal(self) -> bool:
        """True for completed and cancelled runs, which accept no further writes."""
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class Event:
    """One entry of a run's event log. `seq` is gap-free from 1 per run; `id` is unique across runs."""

    id: int
    run_id: str
    seq: int
    type: str
    payload: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Event:
        return cls(
            id=row["id"], run_id=row["run_id"], seq=row["seq"], type=row["type"], payload=row["payload"],
            created_at=row["created_at"],
        )


@dataclass(frozen=True)
class StateVersion:
    """One version of a state stream: the value after the write, the patch for a merge, and an optional label."""

    id: str
    run_id: str
    stream: str
    version: int
    value: Any
    patch: Any
    label: str | None
    reason: str | None
    importance: str
    metadata: dict[str, Any]
    step_key: str | None
    created_by: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> StateVersion:
        return cls(
            id=row["id"], run_id=row["run_id"], stream=row["stream"], version=row["version"], value=row["value"],
            patch=row["patch"], label=row["label"], reason=row["reason"], importance=row["importance"],
            metadata=row["metadata"], step_key=row["step_key"], created_by=row["created_by"],
            created_at=row["created_at"],
        )


@dataclass(frozen=True)
class RunPage:
    """A page of runs, newest first; pass `next_cursor` back to `tide.runs.list` for the next page (None at the end)."""

    runs: tuple[Run, ...]
    next_cursor: str | None


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

    def decided(self) -> GateDecision:
        """The decision of a resolved gate, as `run.gate(...)` returns it."""
        assert self.decision is not None
        return GateDecision(self.id, self.name, self.decision, self.actor, self.payload)
