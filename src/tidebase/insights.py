# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""What a dashboard reads about runs (`tide.insights`): counts, live pulses, a run's overview, pages of its steps,
events and state versions, usage sums, and gate decisions across runs.

Everything the Studio of `tidebase serve` shows comes from here or from the other public read methods (`tide.runs`,
`tide.gates`, `tide.queues`, `tide.schedules`), so a user can read in Python whatever the Studio shows. Reads only:
nothing here writes or decides anything. The statements live in `sql/queries_studio.sql`; those a page issues on every
load are bounded by one run's index range or served by index-only scans, so they stay fast on large tables.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from .errors import InvalidArgument, NotFound
from .gates import Gate
from .insight_models import DailyUsage, Link, RunOverview, RunPulse, StateStream, StepUsage, Totals, pair_by
from .models import RUN_STATUSES, Event, StateVersion, Step

if TYPE_CHECKING:
    from .engine import Tidebase

MAX_PAGE = 1000


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be between 1 and {MAX_PAGE}")
    return limit


class Insights:
    """Read-only views over runs for people watching them (`tide.insights`). Every method is safe to retry."""

    def __init__(self, tide: Tidebase) -> None:
        self._tide = tide

    def status_counts(self) -> dict[str, int]:
        """How many runs have each status (every status is a key, 0 when none): one index-only count per status."""
        db = self._tide._open()
        rows = db.fetchall("insight_status_counts", {"statuses": list(RUN_STATUSES)})
        return {r["status"]: int(r["runs"]) for r in rows}

    def workflows(self, limit: int = 200) -> builtins.list[str]:
        """Distinct workflow names that have runs, in name order, at most `limit`."""
        db = self._tide._open()
        rows = db.fetchall("insight_workflows", {"limit": _limit(limit)})
        return [r["workflow"] for r in rows]

    def pulse(self, run_ids: Sequence[str]) -> builtins.list[RunPulse]:
        """Status, attempt, lease and current step of each of `run_ids` that exists (at most 1000, any order)."""
        ids = list(dict.fromkeys(run_ids))
        if len(ids) > MAX_PAGE:
            raise InvalidArgument(f"at most {MAX_PAGE} run ids")
        if not ids:
            return []
        db = self._tide._open()
        return [RunPulse.from_row(r) for r in db.fetchall("insight_pulse", {"run_ids": ids})]

    def overview(self, run_id: str, *, children: int = 500) -> RunOverview:
        """The run without its steps, with step and event counts, when its current attempt started, the runs it
        created (at most `children`) and those that created it, read from one snapshot. NotFound if unknown."""
        db = self._tide._open()
        params = {"run_id": run_id, "limit": _limit(children)}
        rows, kids, parents = db.snapshot(
            [("insight_overview", params), ("insight_child_edges", params), ("insight_parent_edges", params)],
            run_id=run_id)
        if not rows:
            raise NotFound(f"run {run_id!r} not found", run_id=run_id)
        return RunOverview.from_row(rows[0], tuple(Link.from_row(r, child=True) for r in kids),
                                    tuple(Link.from_row(r, child=False) for r in parents))

    def steps(self, run_id: str, *, offset: int = 0, limit: int = 200) -> builtins.list[Step]:
        """A page of the run's steps in the order they were first written, from position `offset` (0-based).
        An unknown run has no steps."""
        if offset < 0:
            raise InvalidArgument("offset must be >= 0")
        db = self._tide._open()
        rows = db.fetchall("insight_steps_page", {"run_id": run_id, "offset": offset, "limit": _limit(limit)},
                                 run_id=run_id)
        return [Step.from_row(r) for r in rows]

    def step(self, run_id: str, key: str) -> Step:
        """One step of the run by key (`search`, `search#2`, ...). NotFound when there is none."""
        db = self._tide._open()
        row = db.fetchone("insight_step_by_key", {"run_id": run_id, "key": key}, run_id=run_id, step=key)
        if row is None:
            raise NotFound(f"run {run_id!r} has no step {key!r}", run_id=run_id, step=key)
        return Step.from_row(row)

    def recent_events(self, run_id: str, limit: int = 200) -> builtins.list[Event]:
        """The run's newest `limit` events, in seq order (continue live with `tide.runs.events(after=...)`)."""
        db = self._tide._open()
        rows = db.fetchall("insight_recent_events", {"run_id": run_id, "limit": _limit(limit)}, run_id=run_id)
        return [Event.from_row(r) for r in rows]

    def streams(self, run_id: str) -> builtins.list[StateStream]:
        """The run's state streams (`run` is the live state of `run.state`), each with its current value."""
        db = self._tide._open()
        return [StateStream.from_row(r) for r in db.fetchall("insight_streams", {"run_id": run_id},
                                                                    run_id=run_id)]

    def versions(
        self, run_id: str, *, stream: str = "run", before: int | None = None, limit: int = 200
    ) -> builtins.list[StateVersion]:
        """Versions of one state stream, newest first, below version `before` (None: from the newest). Read the
        state at a version, label or step with `tide.runs.state_at`."""
        db = self._tide._open()
        rows = db.fetchall("insight_versions", {
            "run_id": run_id, "stream": stream, "before": before if before is not None else 2**62,
            "limit": _limit(limit)}, run_id=run_id)
        return [StateVersion.from_row(r) for r in rows]

    def snapshots(self, run_id: str) -> builtins.list[StateVersion]:
        """Every labelled version of any stream of the run (saves and snapshots), newest first."""
        db = self._tide._open()
        return [StateVersion.from_row(r) for r in db.fetchall("labeled_versions", {"run_id": run_id},
                                                                     run_id=run_id)]

    def step_usage(self, run_id: str, *, limit: int = 50) -> builtins.list[StepUsage]:
        """The run's usage summed per step, spent and saved by replays, for the `limit` steps that spent the most
        (most first; records made outside any step have `step_key` None). See `usage_totals` for the whole run."""
        db = self._tide._open()
        rows = db.fetchall("insight_step_usage", {"run_id": run_id, "limit": _limit(limit)}, run_id=run_id)
        return [StepUsage(key[0], spent, saved) for key, spent, saved in pair_by(rows, "step_key")]

    def usage_totals(self, run_id: str) -> tuple[Totals, Totals]:
        """The run's whole usage: (spent, saved by replays)."""
        db = self._tide._open()
        rows = {r["saved"]: r for r in db.fetchall("insight_usage_totals", {"run_id": run_id}, run_id=run_id)}
        return Totals.from_row(rows.get(False)), Totals.from_row(rows.get(True))

    def decisions(self, limit: int = 50) -> builtins.list[Gate]:
        """Resolved gates across runs, newest decision first: who decided (`actor`), when and what."""
        db = self._tide._open()
        return [Gate.from_row(r) for r in db.fetchall("insight_decisions", {"limit": _limit(limit)})]

    def usage_by_day(self, days: int = 14, *, now: datetime | None = None) -> builtins.list[DailyUsage]:
        """Usage per UTC day and workflow over the last `days` days up to `now` (default: the database clock),
        oldest day first: spent, and saved by replays."""
        if not 1 <= days <= 366:
            raise InvalidArgument("days must be between 1 and 366")
        db = self._tide._open()
        if now is None:
            clock = db.fetchone("db_now", {})
            assert clock is not None
            now = clock["now"]
        start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
        rows = db.fetchall("insight_usage_by_day", {"since": start})
        return [DailyUsage(day, workflow, spent, saved)
                for (day, workflow), spent, saved in pair_by(rows, "day", "workflow")]
