"""`python -m bench core`: the cost of a checkpointed step against the raw Postgres floor, and of replay.

Each round runs, in this order and on the same database: the raw floor, the sync Tidebase measurements (executed
steps, then replay), the asyncio executed steps, and, with `diagnose`, the diagnostic rows. Interleaving the systems
round by round exposes them to the same drift of the machine, and the per-round ratios compare neighbours.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tidebase import Tidebase

from .database import with_settings
from .workloads import (
    StepRun,
    create_floor_table,
    measure_floor,
    measure_raw_complete_step,
    measure_replay,
    measure_select,
    measure_tidebase_async,
    run_steps,
)

REPLAY_WARMUP_RUNS = 6
REPLAY_WARMUP_STEPS = 20

Log = Callable[[str], None]


def log_to_stderr(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class CoreConfig:
    """What to measure: `steps` executed steps per system per round, `rounds` rounds, a replay of `replay_steps`
    checkpoints, and `warmup` untimed iterations per system per round."""

    steps: int = 2000
    rounds: int = 5
    replay_steps: int = 1000
    warmup: int = 300
    diagnose: bool = False

    @classmethod
    def smoke(cls, *, diagnose: bool = False) -> CoreConfig:
        """A tiny run that exercises every code path in a few seconds (what CI runs)."""
        return cls(steps=20, rounds=1, replay_steps=50, warmup=20, diagnose=diagnose)

    def as_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "rounds": self.rounds, "replay_steps": self.replay_steps,
                "warmup": self.warmup, "diagnose": self.diagnose}


@dataclass
class CoreResults:
    """Raw measurements, one entry per round."""

    floor: list[StepRun] = field(default_factory=list)
    tidebase: list[StepRun] = field(default_factory=list)
    tidebase_async: list[StepRun] = field(default_factory=list)
    replay_s: list[float] = field(default_factory=list)
    select_s: list[float] = field(default_factory=list)
    diagnostics: dict[str, list[StepRun]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "floor": [r.as_json() for r in self.floor],
            "tidebase": [r.as_json() for r in self.tidebase],
            "tidebase_async": [r.as_json() for r in self.tidebase_async],
            "replay_s": self.replay_s,
            "select_s": self.select_s,
            "diagnostics": {name: [r.as_json() for r in runs] for name, runs in self.diagnostics.items()},
        }


def tidebase_round(dsn: str, config: CoreConfig) -> tuple[StepRun, float, float]:
    """The sync Tidebase measurements of one round, on one Tidebase instance (pool kept open throughout).

    Creating the instance, migrating, and warming it up (`warmup` executed steps, a few small replays) happen
    outside the timed regions. Returns the executed-step run, the replay time and the raw-SELECT time.
    """
    with Tidebase(dsn) as tide, psycopg.connect(dsn, autocommit=True) as conn:
        run_steps(tide, config.warmup)
        executed = run_steps(tide, config.steps)
        for _ in range(REPLAY_WARMUP_RUNS):
            measure_replay(tide, min(REPLAY_WARMUP_STEPS, config.replay_steps))
        run_id, replay_s = measure_replay(tide, config.replay_steps)
        select_s = measure_select(conn, run_id)
    return executed, replay_s, select_s


def tidebase_sync_round(dsn: str, config: CoreConfig) -> StepRun:
    """Executed steps only, on a fresh warmed Tidebase instance (used by the diagnostics)."""
    with Tidebase(dsn) as tide:
        run_steps(tide, config.warmup)
        return run_steps(tide, config.steps)


def diagnose_round(dsn: str, config: CoreConfig, into: dict[str, list[StepRun]]) -> None:
    """Diagnostic rows: floor and Tidebase with `synchronous_commit=off` (commits stop waiting for the WAL flush),
    and Tidebase's complete_step statement driven by a bare psycopg loop (no library code per step)."""
    relaxed = with_settings(dsn, synchronous_commit="off")
    rows: dict[str, Callable[[], StepRun]] = {
        "floor_async_commit": lambda: measure_floor(relaxed, config.steps, config.warmup),
        "tidebase_async_commit": lambda: tidebase_sync_round(relaxed, config),
        "raw_complete_step": lambda: measure_raw_complete_step(dsn, config.steps, config.warmup),
    }
    for name, measure in rows.items():
        into.setdefault(name, []).append(measure())


def run_core(dsn: str, config: CoreConfig, log: Log = log_to_stderr) -> CoreResults:
    """Runs `config.rounds` interleaved rounds against the target database `dsn` and returns the raw numbers."""
    create_floor_table(dsn)
    results = CoreResults()
    for number in range(1, config.rounds + 1):
        log(f"round {number}/{config.rounds}: raw floor")
        results.floor.append(measure_floor(dsn, config.steps, config.warmup))
        log(f"round {number}/{config.rounds}: tidebase (sync) executed steps and replay")
        executed, replay_s, select_s = tidebase_round(dsn, config)
        results.tidebase.append(executed)
        results.replay_s.append(replay_s)
        results.select_s.append(select_s)
        log(f"round {number}/{config.rounds}: tidebase (asyncio) executed steps")
        results.tidebase_async.append(measure_tidebase_async(dsn, config.steps, config.warmup))
        if config.diagnose:
            log(f"round {number}/{config.rounds}: diagnostics")
            diagnose_round(dsn, config, results.diagnostics)
    return results
