"""Read-only records of `tide.insights`: what a dashboard shows about runs, beyond the records of `tidebase.models`.

Frozen dataclasses, each built from a database row in one place (`from_row`). Shared by the asyncio and the sync API
(`insights_async.py` and its generated twin), so both return the same classes. Nothing here holds a secret: resolve
tokens, channel and webhook secrets are not columns of the rows these are built from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from tidebase.models import Edge, Run, Step

Row = dict[str, Any]


@dataclass(frozen=True)
class RunPulse:
    """What changes while a run is watched: status, attempt, lease, and its current step (the step of the newest
    step event among the run's last 50 events; None when there is none)."""

    id: str
    workflow: str
    status: str
    attempt: int
    updated_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    step_key: str | None
    step_event: str | None

    @classmethod
    def from_row(cls, row: Row) -> RunPulse:
        return cls(id=row["id"], workflow=row["workflow"], status=row["status"], attempt=row["attempt"],
                   updated_at=row["updated_at"], lease_owner=row["lease_owner"],
                   lease_expires_at=row["lease_expires_at"], step_key=row["step_key"],
                   step_event=row["step_event"])


@dataclass(frozen=True)
class Link:
    """A run at the other end of an edge: a child (or fork) seen from its parent, or the parent seen from a child."""

    edge: Edge
    run_id: str
    workflow: str
    status: str

    @classmethod
    def from_row(cls, row: Row, *, child: bool) -> Link:
        edge = Edge.from_row(row)
        return cls(edge=edge, run_id=edge.child_run_id if child else edge.parent_run_id,
                   workflow=row["other_workflow"], status=row["other_status"])


@dataclass(frozen=True)
class RunOverview:
    """A run without its steps (see `tide.insights.steps` for a page of them), with what its header shows.

    `attempt_started_at` is when the current attempt took the lease (None before the first); `children` are the runs
    it created (children, fan-out members, forks), `parents` the runs that created it (its parent, or the run it was
    forked from).
    """

    run: Run
    queue: str | None
    cancelled_at: datetime | None
    cancel_actor: str | None
    event_count: int
    step_count: int
    attempt_started_at: datetime | None
    children: tuple[Link, ...] = field(default=())
    parents: tuple[Link, ...] = field(default=())

    @classmethod
    def from_row(cls, row: Row, children: tuple[Link, ...], parents: tuple[Link, ...]) -> RunOverview:
        return cls(run=Run.from_row(row), queue=row.get("queue"), cancelled_at=row["cancelled_at"],
                   cancel_actor=row["cancel_actor"], event_count=row["event_seq"], step_count=row["step_count"],
                   attempt_started_at=row["attempt_started_at"], children=children, parents=parents)

    @property
    def ended_at(self) -> datetime | None:
        """When the run completed, failed or was cancelled (None while it can still make progress)."""
        if self.run.status == "cancelled":
            return self.cancelled_at
        return self.run.completed_at if self.run.status in ("completed", "failed", "manual_review") else None

    def replayed(self, step: Step) -> bool:
        """True when the current attempt was served this step's stored output instead of running it: the step
        completed before the attempt started (a resumed or forked run). Replays write nothing, so this is read
        from time, not from a record of the replay."""
        return (step.status == "completed" and step.completed_at is not None and self.attempt_started_at is not None
                and step.completed_at < self.attempt_started_at)


@dataclass(frozen=True)
class StateStream:
    """A state stream of a run: its current value and version (0 before the first write)."""

    run_id: str
    name: str
    id: str
    target_type: str
    target_id: str | None
    version: int
    value: Any
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> StateStream:
        return cls(run_id=row["run_id"], name=row["name"], id=row["id"], target_type=row["target_type"],
                   target_id=row["target_id"], version=row["current_version"], value=row["current_value"],
                   updated_at=row["updated_at"])


@dataclass(frozen=True)
class Totals:
    """Sums over usage records: what was spent, or what replay saved."""

    records: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    @classmethod
    def from_row(cls, row: Row | None) -> Totals:
        if row is None:
            return cls()
        return cls(records=row["records"], input_tokens=int(row["input_tokens"]),
                   output_tokens=int(row["output_tokens"]), total_tokens=int(row["total_tokens"]),
                   cost_usd=Decimal(row["cost_usd"]))

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.records + other.records, self.input_tokens + other.input_tokens,
                      self.output_tokens + other.output_tokens, self.total_tokens + other.total_tokens,
                      self.cost_usd + other.cost_usd)


@dataclass(frozen=True)
class StepUsage:
    """Usage of one step of a run (`step_key` None: recorded outside any step): spent, and saved by replays."""

    step_key: str | None
    spent: Totals
    saved: Totals


@dataclass(frozen=True)
class DailyUsage:
    """Usage of one workflow on one UTC day: spent, and saved by replays."""

    day: date
    workflow: str
    spent: Totals
    saved: Totals


def pair_by(rows: list[Row], *keys: str) -> list[tuple[tuple[Any, ...], Totals, Totals]]:
    """Groups sum rows (with a `saved` column) by `keys`, in first-seen order: [(key, spent, saved)]."""
    grouped: dict[tuple[Any, ...], dict[bool, Row]] = {}
    for row in rows:
        grouped.setdefault(tuple(row[k] for k in keys), {})[bool(row["saved"])] = row
    return [(key, Totals.from_row(sums.get(False)), Totals.from_row(sums.get(True))) for key, sums in grouped.items()]
