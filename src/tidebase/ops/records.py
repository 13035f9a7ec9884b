"""The records of the operations' features, shared by the sync and the asyncio API (`tidebase.QueueInfo is
tidebase.aio.QueueInfo`): a queue's caps and counts, a schedule, one fire time of a schedule, and what a
reconciler tick did, and what a retention pass deleted. No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class QueueInfo:
    """A queue's caps (None: unlimited) and its live counts."""

    queue: str
    concurrency: int | None
    rate_limit: int | None
    rate_window: float
    paused: bool
    queued: int
    running: int


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


@dataclass
class TickResult:
    """What one tick did. `active` is False when another reconciler held the lock (and this one did nothing)."""

    active: bool
    recovered: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)
    missed: int = 0
    webhooks: list[str] = field(default_factory=list)  # runs off any queue given a lease_expired recovery webhook
    invoked: list[str] = field(default_factory=list)  # run.invoke webhooks queued by push dispatch
    retention: RetentionResult | None = None  # the periodic retention of this tick (settings.retention), if on


@dataclass(frozen=True)
class RetentionResult:
    """What one retention pass (`tide.gc(...)`, `tidebase gc`, or a reconciler tick) deleted, or with `dry_run`
    would delete.

    `trees` root runs went, `runs` runs in all (roots and their descendants); `rows` counts the rows per table
    (`runs`, `steps`, `events`, ...: every table of a run once any tree went; empty if none did). `kept` finished
    roots older than the cutoff by creation were examined and kept (a status not chosen, a live or young
    descendant, a pending gate or delivery, a schedule's newest fire, a fork that depends on it, or rows another
    process held). `batches` transactions ran in `elapsed_seconds`. `cutoff` is the database time runs had to
    finish before. `complete` is False when the pass stopped at its batch bound before examining every candidate;
    `cursor` is then where the next pass continues.
    """

    dry_run: bool
    cutoff: datetime
    statuses: tuple[str, ...]
    trees: int
    runs: int
    kept: int
    batches: int
    elapsed_seconds: float
    rows: Mapping[str, int]
    complete: bool = True
    cursor: tuple[datetime, str] | None = None
