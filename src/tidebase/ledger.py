# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""What a run spent and what it looked like: the usage ledger, snapshots, time travel and forks.

- `run.usage.record(...)` stores a usage record (tokens, cost) with the run and, when given, the step. A step that
  is served from its checkpoint on resume copies the usage of its original execution as *saved* usage, so a report
  shows both what was spent and what replay avoided.
- `run.snapshots` are labelled milestone versions in a stream about a target (`"<type>:<id>"`).
- `tide.runs.state_at(...)` reads an old version of a state stream; `tide.runs.fork(...)` creates a new run from
  another's past up to a step: its checkpoints, gate decisions, state, and the children that had completed by then
  (the fork replays their stored results; see `children`).

Usage is accepted on runs of every status (it records work that really happened) and is not lease-fenced; every
other write here is. Totals are computed in Python from the records: a report is for reading, not for the hot path.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _serde
from ._base import CURRENT_STEP, check_name, check_run_id
from ._base import new_run_id as generate_run_id
from .errors import InvalidArgument, NotFound
from .models import Run, StateVersion

if TYPE_CHECKING:
    from ._db import Database
    from .engine import Tidebase
    from .run import RunContext


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
        return _sum(r for r in self.records if not r.saved)

    @property
    def saved_total(self) -> UsageTotals:
        return _sum(r for r in self.records if r.saved)


def _sum(records: Any) -> UsageTotals:
    n = inp = out = tot = 0
    cost = Decimal(0)
    for r in records:
        n += 1
        inp += r.input_tokens or 0
        out += r.output_tokens or 0
        tot += r.total_tokens or 0
        cost += r.cost_usd or 0
    return UsageTotals(n, inp, out, tot, cost)


def _grouped(records: builtins.list[UsageRecord]) -> dict[tuple[str, str | None, str | None], UsageTotals]:
    groups: dict[tuple[str, str | None, str | None], builtins.list[UsageRecord]] = defaultdict(builtins.list)
    for r in records:
        groups[(r.kind, r.provider, r.model)].append(r)
    return {key: _sum(rs) for key, rs in groups.items()}


def _check_count(value: int | None, what: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InvalidArgument(f"{what} must be a non-negative integer, not {value!r}")
    return value


class Usage:
    """`run.usage`: records what this run spends."""

    def __init__(self, run: RunContext) -> None:
        self._run = run

    def record(
        self, *, kind: str = "custom", provider: str | None = None, model: str | None = None,
        input_tokens: int | None = None, output_tokens: int | None = None, total_tokens: int | None = None,
        cost_usd: float | Decimal | None = None, quantity: float | None = None, unit: str | None = None,
        label: str | None = None, step: str | None = None, metadata: dict[str, Any] | None = None,
    ) -> UsageRecord:
        """Stores one usage record (and a usage.recorded event). `total_tokens` defaults to input + output; `step`
        defaults to the step whose function is running. Raises InvalidArgument for negative or non-integer counts
        and a negative cost; nothing is written then."""
        check_name(kind, "usage kind")
        step = step if step is not None else CURRENT_STEP.get()
        for what, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens),
                            ("total_tokens", total_tokens)):
            _check_count(value, what)
        if cost_usd is not None and (not isinstance(cost_usd, int | float | Decimal) or not cost_usd >= 0):
            raise InvalidArgument(f"cost_usd must be a non-negative number, not {cost_usd!r}")
        run = self._run
        meta = _serde.encode(metadata or {}, run.tide.serializer, limit=run.tide.max_payload_bytes,
                             what="usage metadata", run_id=run.run_id)
        row = run._db.fetchone("record_usage", {
            "run_id": run.run_id, "usage_id": "use_" + uuid.uuid4().hex, "step_key": step, "kind": kind,
            "provider": provider, "model": model, "label": label, "unit": unit, "quantity": quantity,
            "input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": total_tokens,
            "cost_usd": None if cost_usd is None else Decimal(str(cost_usd)), "metadata": meta,
        }, run_id=run.run_id)
        assert row is not None
        return UsageRecord.from_row(row)

    def _record_saved(self, step_key: str) -> None:
        """Copies the original usage of a step served from its checkpoint as saved usage."""
        self._run._db.fetchone("record_saved_usage", {"run_id": self._run.run_id, "step_key": step_key},
                                     run_id=self._run.run_id, step=step_key)


class Snapshots:
    """`run.snapshots`: labelled milestone versions of a state stream about a target."""

    def __init__(self, run: RunContext) -> None:
        self._run = run

    def create(
        self, label: str, *, state: Any = None, target: dict[str, str] | None = None, reason: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> StateVersion:
        """Stores `state` as a labelled version in stream `"<type>:<id>"` of `target` (default: this run)."""
        check_name(label, "label")
        run = self._run
        target = target or {"type": "run", "id": run.run_id}
        if set(target) != {"type", "id"}:
            raise InvalidArgument("target must be {'type': ..., 'id': ...}")
        check_name(target["type"], "target type")
        check_name(target["id"], "target id")
        run._check_alive()
        enc, limit = run.tide.serializer, run.tide.max_payload_bytes
        row = run._write("write_state", {
            "run_id": run.run_id, "token": run.token, "stream": f"{target['type']}:{target['id']}",
            "mode": "snapshot", "value": _serde.encode({} if state is None else state, enc, limit=limit,
                                                       what="snapshot state", run_id=run.run_id),
            "label": label, "reason": reason, "importance": None,
            "metadata": _serde.encode(metadata or {}, enc, limit=limit, what="metadata", run_id=run.run_id),
            "created_by": run.owner, "step_key": None, "target_type": target["type"], "target_id": target["id"],
        }, None)
        assert row is not None
        return StateVersion.from_row(row)

    def list(self) -> builtins.list[StateVersion]:
        """Every labelled version of any stream of this run (saves and snapshots), newest first."""
        rows = self._run._db.fetchall("labeled_versions", {"run_id": self._run.run_id},
                                            run_id=self._run.run_id)
        return [StateVersion.from_row(r) for r in rows]


def usage_report(tide: Tidebase, run_id: str, *, include_children: bool) -> UsageReport:
    """See Runs.usage. The descendants are the runs created as children, recursively: a fork's inherited
    children (the source's, replayed) are the source's spending, not the fork's."""
    db = tide._open()
    if db.fetchone("get_run", {"run_id": run_id}) is None:
        raise NotFound(f"run {run_id!r} not found", run_id=run_id)
    run_ids = [run_id]
    if include_children:
        run_ids = [r["id"] for r in db.fetchall("run_tree", {"run_id": run_id}, run_id=run_id)]
    records = [UsageRecord.from_row(r) for r in db.fetchall("usage_of_runs", {"run_ids": run_ids})]
    return UsageReport(tuple(run_ids), tuple(records), _grouped([r for r in records if not r.saved]),
                       _grouped([r for r in records if r.saved]))


def state_at(
    tide: Tidebase, run_id: str, *, version: int | None, label: str | None, step: str | None,
    stream: str | None,
) -> StateVersion:
    """See Runs.state_at."""
    chosen = [(n, v) for n, v in (("version", version), ("label", label), ("step", step)) if v is not None]
    if len(chosen) != 1:
        raise InvalidArgument("give exactly one of version=, label=, step=")
    kind, value = chosen[0]
    db = tide._open()
    if stream is None and kind == "label":
        return _state_at_label_anywhere(db, run_id, str(label))
    stream = stream or "run"
    query = {"version": "state_at_version", "label": "state_at_label", "step": "state_at_step"}[kind]
    row = db.fetchone(query, {"run_id": run_id, "stream": stream, "version": version, "label": label,
                                    "step_key": step}, run_id=run_id)
    if row is None:
        raise NotFound(f"run {run_id!r} has no state in stream {stream!r} at {kind} {value!r}", run_id=run_id)
    return StateVersion.from_row(row)


def _state_at_label_anywhere(db: Database, run_id: str, label: str) -> StateVersion:
    """The newest version labelled `label` in whichever stream of the run has it; InvalidArgument naming the
    streams when several have it, NotFound when none does."""
    rows = db.fetchall("state_at_label_any_stream", {"run_id": run_id, "label": label}, run_id=run_id)
    if not rows:
        raise NotFound(f"run {run_id!r} has no state version labelled {label!r} in any stream", run_id=run_id)
    if len(rows) > 1:
        streams = ", ".join(repr(r["stream"]) for r in rows)
        raise InvalidArgument(f"label {label!r} of run {run_id!r} is in several streams ({streams}): name one "
                              "with stream=")
    return StateVersion.from_row(rows[0])


def fork_run(
    tide: Tidebase, run_id: str, at_step: str, *, new_run_id: str | None, input: Any
) -> Run:
    """See Runs.fork."""
    new_id = check_run_id(new_run_id) if new_run_id is not None else generate_run_id()
    input_text = input_hash = None
    if input is not None:
        input_text = _serde.encode(input, tide.serializer, limit=tide.max_payload_bytes, what="input",
                                   run_id=new_id)
        input_hash = _serde.canonical_hash(json.loads(input_text), tide.serializer)
    db = tide._open()
    row = db.fetchone("fork_run", {"source_id": run_id, "at_key": at_step, "new_id": new_id,
                                         "input": input_text, "input_hash": input_hash}, run_id=run_id)
    assert row is not None
    return Run.from_row(row)
