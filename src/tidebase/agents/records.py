"""The records of the agents' features, shared by the sync and the asyncio API (`tidebase.Child is
tidebase.aio.Child`): a fan-out's child, and what a run spent (a usage record, totals, a report: spent and saved by
replay). Plain frozen data and the checks on it; no I/O.
"""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tidebase.core.rules import check_name
from tidebase.errors import InvalidArgument


@dataclass(frozen=True)
class Child:
    """One child of a fan-out: `name` (unique within the fan-out, part of the edge name), the `workflow` callable
    `(run, input)`, its `input`, and its workflow name (the callable's `__name__` when omitted)."""

    name: str
    workflow: Callable[..., Any]
    input: Any = None
    workflow_name: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "child name")
        workflow_name = self.workflow_name
        if workflow_name is None:
            workflow_name = getattr(self.workflow, "__name__", None)
            if not isinstance(workflow_name, str):
                raise InvalidArgument(f"child {self.name!r}: give a workflow_name, the workflow has no __name__")
            object.__setattr__(self, "workflow_name", workflow_name)  # frozen: the one place it is filled in
        check_name(workflow_name, "workflow name")


@dataclass(frozen=True)
class UsageRecord:
    """One usage entry. `saved` records were not spent again: a replayed step's copy of its original usage."""

    id: str
    run_id: str
    step_key: str | None
    kind: str
    provider: str | None
    model: str | None
    label: str | None
    unit: str | None
    quantity: float | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: Decimal | None
    metadata: dict[str, Any]
    saved: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> UsageRecord:
        return cls(
            id=row["id"], run_id=row["run_id"], step_key=row["step_key"], kind=row["kind"],
            provider=row["provider"], model=row["model"], label=row["label"], unit=row["unit"],
            quantity=row["quantity"], input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
            total_tokens=row["total_tokens"], cost_usd=row["cost_usd"], metadata=row["metadata"],
            saved=row["saved"], created_at=row["created_at"],
        )


@dataclass(frozen=True)
class UsageTotals:
    """Sums over a group of records."""

    records: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


@dataclass(frozen=True)
class UsageReport:
    """Usage of a run (and its descendants when asked): the records, and totals per (kind, provider, model) for what
    was spent and for what replay saved."""

    run_ids: tuple[str, ...]
    records: tuple[UsageRecord, ...]
    spent: dict[tuple[str, str | None, str | None], UsageTotals] = field(default_factory=dict)
    saved: dict[tuple[str, str | None, str | None], UsageTotals] = field(default_factory=dict)

    @property
    def spent_total(self) -> UsageTotals:
        return sum_usage(r for r in self.records if not r.saved)

    @property
    def saved_total(self) -> UsageTotals:
        return sum_usage(r for r in self.records if r.saved)


def sum_usage(records: Any) -> UsageTotals:
    n = inp = out = tot = 0
    cost = Decimal(0)
    for r in records:
        n += 1
        inp += r.input_tokens or 0
        out += r.output_tokens or 0
        tot += r.total_tokens or 0
        cost += r.cost_usd or 0
    return UsageTotals(n, inp, out, tot, cost)


def grouped_usage(records: builtins.list[UsageRecord]) -> dict[tuple[str, str | None, str | None], UsageTotals]:
    groups: dict[tuple[str, str | None, str | None], builtins.list[UsageRecord]] = defaultdict(builtins.list)
    for r in records:
        groups[(r.kind, r.provider, r.model)].append(r)
    return {key: sum_usage(rs) for key, rs in groups.items()}


def check_count(value: int | None, what: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InvalidArgument(f"{what} must be a non-negative integer, not {value!r}")
    return value
