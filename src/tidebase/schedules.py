# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""Cron schedules: `tide.schedules.set("daily-digest", cron="0 9 * * *", workflow="digest", input=...)`.

Expressions are in the cron dialect of `tidebase.cron`: five fields, read in UTC. The reconciler fires due schedules:
each fire is a conditional update of the schedule's next fire time plus a run whose id is derived from (schedule, fire
time), so a fire enqueues exactly once however many reconcilers tick at the same moment. Fire times that passed while
no reconciler ran are recorded as `missed` in the fire history (and logged), not silently collapsed; only the latest
one is enqueued.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import _serde
from . import cron as _cron
from ._base import check_name
from .errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from .engine import Tidebase

MAX_MISSED = 1000  # fire times recorded as missed in one pass; older ones beyond this are counted in the log only


@dataclass(frozen=True)
class Schedule:
    """A named cron schedule and the run it enqueues."""

    name: str
    cron: str
    workflow: str
    input: Any
    queue: str
    priority: int
    max_attempts: int
    enabled: bool
    next_fire_at: datetime
    last_fire_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Schedule:
        return cls(name=row["name"], cron=row["cron"], workflow=row["workflow"], input=row["input"],
                   queue=row["queue"], priority=row["priority"], max_attempts=row["max_attempts"],
                   enabled=row["enabled"], next_fire_at=row["next_fire_at"], last_fire_at=row["last_fire_at"])


@dataclass(frozen=True)
class Fire:
    """One fire time of a schedule: `enqueued` (with its run id) or `missed`."""

    fire_at: datetime
    status: str
    run_id: str | None


def check_cron(cron: str) -> str:
    """Validates a cron expression (`tidebase.cron`: five fields, read in UTC) and checks that it fires within five
    years of now; InvalidArgument otherwise, saying what is wrong."""
    try:
        _cron.validate(cron)
    except _cron.CronError as exc:
        raise InvalidArgument(f"invalid cron expression {cron!r}: {exc}") from None
    return cron


def next_fire(cron: str, after: datetime) -> datetime:
    """The first fire time of `cron` strictly after `after` (aware), in UTC; InvalidArgument when `cron` is invalid
    or has no fire within five years of `after`."""
    try:
        return _cron.parse(cron).next_after(after)
    except _cron.CronError as exc:
        raise InvalidArgument(f"invalid cron expression {cron!r}: {exc}") from None


def plan_fires(cron: str, next_fire_at: datetime, now: datetime) -> tuple[list[datetime], datetime, datetime]:
    """For a schedule due at `next_fire_at` <= `now`: (missed fire times, the fire time to enqueue, the next fire
    time after now). I/O-free. Raises CronError when `cron` is not valid in the `tidebase.cron` dialect or has no
    fire within five years of a fire time."""
    parsed = _cron.parse(cron)
    fires = [next_fire_at.astimezone(UTC)]
    while True:
        candidate = parsed.next_after(fires[-1])
        if candidate > now:
            break
        fires.append(candidate)
        if len(fires) > MAX_MISSED + 1:
            fires.pop(1)  # keep the first (the schedule's condition) and the newest
    return fires[:-1], fires[-1], candidate


class Schedules:
    """Cron schedules that enqueue runs (`tide.schedules`)."""

    def __init__(self, tide: Tidebase) -> None:
        self._tide = tide

    def set(
        self, name: str, *, cron: str, workflow: str, input: Any = None, queue: str = "default", priority: int = 0,
        max_attempts: int = 1, enabled: bool = True,
    ) -> Schedule:
        """Creates or replaces schedule `name`; its next fire is the first cron time after now (database clock)."""
        check_name(name, "schedule name")
        check_name(workflow, "workflow name")
        check_cron(cron)
        enc = self._tide.serializer
        text = _serde.encode(input if input is not None else {}, enc, limit=self._tide.max_payload_bytes,
                             what="input")
        db = self._tide._open()
        now = db.fetchone("db_now", {})
        assert now is not None
        row = db.fetchone("set_schedule", {
            "name": name, "cron": cron, "workflow": workflow, "input": text,
            "input_hash": _serde.canonical_hash(json.loads(text), enc), "queue": queue, "priority": priority,
            "max_attempts": max_attempts, "enabled": enabled, "next_fire_at": next_fire(cron, now["now"]),
        })
        assert row is not None
        return Schedule.from_row(row)

    def get(self, name: str) -> Schedule:
        """The schedule; NotFound when there is none."""
        db = self._tide._open()
        row = db.fetchone("get_schedule", {"name": name})
        if row is None:
            raise NotFound(f"schedule {name!r} not found")
        return Schedule.from_row(row)

    def list(self) -> builtins.list[Schedule]:
        """Every schedule, by name."""
        db = self._tide._open()
        return [Schedule.from_row(r) for r in db.fetchall("list_schedules", {})]

    def delete(self, name: str) -> bool:
        """Removes the schedule and its fire history; False when there was none."""
        db = self._tide._open()
        return db.fetchone("delete_schedule", {"name": name}) is not None

    def fires(self, name: str, limit: int = 100) -> builtins.list[Fire]:
        """The schedule's fire history, newest first: enqueued fires with their run, and missed ones."""
        db = self._tide._open()
        rows = db.fetchall("schedule_fires", {"name": name, "limit": limit})
        return [Fire(r["fire_at"], r["status"], r["run_id"]) for r in rows]

    def pause(self, name: str) -> Schedule:
        """Stops the schedule from firing until `resume`; NotFound when there is none. Safe to retry."""
        return self._enable(name, False, None)

    def resume(self, name: str) -> Schedule:
        """Lets a paused schedule fire again from the first cron time after now (database clock): fire times that
        passed while it was paused are skipped, not recorded as missed. NotFound when there is none."""
        schedule = self.get(name)
        db = self._tide._open()
        now = db.fetchone("db_now", {})
        assert now is not None
        return self._enable(name, True, next_fire(schedule.cron, now["now"]))

    def _enable(self, name: str, enabled: bool, next_fire_at: datetime | None) -> Schedule:
        db = self._tide._open()
        row = db.fetchone("set_schedule_enabled", {"name": name, "enabled": enabled,
                                                         "next_fire_at": next_fire_at})
        if row is None:
            raise NotFound(f"schedule {name!r} not found")
        return Schedule.from_row(row)
