"""Turns the raw numbers of `bench.core` into the printed table and the `--json` document.

Times are printed in milliseconds. "per step" is a run's wall time divided by its step count (median over rounds,
[min - max]); p50/p99 are single-step latencies pooled over every round; "vs floor" is the median over rounds of
(this row's per-step time / the same round's floor per-step time), [min - max].
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core import CoreConfig, CoreResults
from .stats import Spread, percentile
from .workloads import StepRun, payload_bytes

STEP_GOAL_RATIO = 1.3
REPLAY_GOAL_S = 0.030


@dataclass(frozen=True)
class StepSummary:
    """Summary of one executed-step row, relative to a reference row measured in the same rounds."""

    per_step: Spread
    p50: float
    p99: float
    cpu_per_step: float
    ratio: Spread

    @classmethod
    def of(cls, runs: Sequence[StepRun], reference: Sequence[StepRun]) -> StepSummary:
        latencies = [s for run in runs for s in run.latencies_s]
        return cls(
            per_step=Spread.of([r.per_step_s for r in runs]),
            p50=percentile(latencies, 50),
            p99=percentile(latencies, 99),
            cpu_per_step=Spread.of([r.cpu_per_step_s for r in runs]).median,
            ratio=Spread.of([r.per_step_s / f.per_step_s for r, f in zip(runs, reference, strict=True)]),
        )

    def as_json(self) -> dict[str, Any]:
        return {"per_step_s": vars(self.per_step), "p50_s": self.p50, "p99_s": self.p99,
                "cpu_per_step_s": self.cpu_per_step, "ratio_to_floor": vars(self.ratio)}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def spread_ms(spread: Spread) -> str:
    return f"{ms(spread.median)} [{ms(spread.low)} - {ms(spread.high)}]"


def spread_ratio(spread: Spread) -> str:
    return f"{spread.median:.2f}x [{spread.low:.2f} - {spread.high:.2f}]"


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Aligns rows into columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append((indent + "   ".join(cells)).rstrip())
    return lines


_STEP_HEADER = ["", "per step ms: median [min - max]", "p50 ms", "p99 ms", "CPU/step ms", "vs floor"]


def step_row(label: str, summary: StepSummary) -> list[str]:
    return [label, spread_ms(summary.per_step), ms(summary.p50), ms(summary.p99), ms(summary.cpu_per_step),
            spread_ratio(summary.ratio)]


def goal(met: bool, detail: str) -> str:
    return f"{'met' if met else 'goal missed'} ({detail})"


def summaries(results: CoreResults) -> dict[str, StepSummary]:
    """Every executed-step row, each relative to the floor measured in the same rounds (and same settings)."""
    rows = {
        "floor": StepSummary.of(results.floor, results.floor),
        "tidebase": StepSummary.of(results.tidebase, results.floor),
        "tidebase_async": StepSummary.of(results.tidebase_async, results.floor),
    }
    diag = results.diagnostics
    if diag:
        rows["floor_async_commit"] = StepSummary.of(diag["floor_async_commit"], diag["floor_async_commit"])
        rows["tidebase_async_commit"] = StepSummary.of(diag["tidebase_async_commit"], diag["floor_async_commit"])
        rows["raw_complete_step"] = StepSummary.of(diag["raw_complete_step"], results.floor)
    return rows


def header(command: str, facts: dict[str, Any], config: CoreConfig, database: str) -> list[str]:
    return [
        "Tidebase core benchmark",
        f"command:  {command}",
        f"machine:  {facts['cpu_count']} CPUs, {facts['platform']}, Python {facts['python']}, "
        f"psycopg {facts['psycopg']}, tidebase {facts['tidebase']}",
        f"server:   PostgreSQL {facts['server_version']}, fsync={facts['fsync']}, "
        f"synchronous_commit={facts['synchronous_commit']}, wal_sync_method={facts['wal_sync_method']}, "
        f"shared_buffers={facts['shared_buffers']}",
        f"database: {database} (created for this run, dropped at exit)",
        f"workload: {config.steps} steps per run, {plural(config.rounds, 'interleaved round')}, replay of "
        f"{config.replay_steps} checkpoints, {config.warmup} warm-up iterations per system per round, "
        f"step output {payload_bytes()} bytes of JSON",
    ]


def executed_section(rows: dict[str, StepSummary], config: CoreConfig) -> list[str]:
    tide = rows["tidebase"]
    return [
        "",
        f"Executed step: one committed write per step ({config.steps} steps x {plural(config.rounds, 'round')})",
        *table([
            _STEP_HEADER,
            step_row("raw floor: psycopg INSERT, autocommit", rows["floor"]),
            step_row("tidebase run.step (sync)", tide),
            step_row("tidebase run.step (asyncio)", rows["tidebase_async"]),
        ]),
        f"  goal: tidebase (sync) per step <= {STEP_GOAL_RATIO:.1f}x the floor: "
        + goal(tide.ratio.median <= STEP_GOAL_RATIO, f"{tide.ratio.median:.2f}x"),
    ]


def replay_section(results: CoreResults, config: CoreConfig) -> list[str]:
    replay = Spread.of(results.replay_s)
    select = Spread.of(results.select_s)
    steps = config.replay_steps
    return [
        "",
        f"Replay of {steps} completed checkpoints ({plural(config.rounds, 'round')})",
        *table([
            ["", "ms: median [min - max]"],
            [f"tide.run(...) on the failed run until its code enters step {steps + 1}", spread_ms(replay)],
            [f"reference: raw SELECT * FROM tidebase.steps ({steps} rows, warm connection)", spread_ms(select)],
        ]),
        f"  goal: replay to step {steps + 1} < {REPLAY_GOAL_S * 1000:.0f} ms: "
        + goal(replay.median < REPLAY_GOAL_S, f"{ms(replay.median)} ms"),
    ]


def diagnostics_section(rows: dict[str, StepSummary]) -> list[str]:
    floor, tide = rows["floor"], rows["tidebase"]
    floor_off, tide_off, raw = rows["floor_async_commit"], rows["tidebase_async_commit"], rows["raw_complete_step"]
    flush = floor.per_step.median - floor_off.per_step.median
    statement = raw.per_step.median - floor.per_step.median
    library = tide.per_step.median - raw.per_step.median
    return [
        "",
        "Diagnostics (--diagnose): where a step's time goes",
        *table([
            _STEP_HEADER,
            step_row("raw floor, synchronous_commit=off", floor_off),
            step_row("tidebase run.step (sync), synchronous_commit=off (vs floor above)", tide_off),
            step_row("tidebase complete_step SQL from a bare psycopg loop", raw),
        ]),
        f"  waiting for the WAL flush at commit (floor - floor with synchronous_commit=off): {ms(flush)} ms/step",
        f"  tidebase's statement over the floor's INSERT (complete_step SQL - floor):       {ms(statement)} ms/step",
        f"  tidebase's client-side code (run.step - complete_step SQL):                     {ms(library)} ms/step",
    ]


def render(command: str, facts: dict[str, Any], config: CoreConfig, database: str, results: CoreResults) -> str:
    """The full printed report."""
    rows = summaries(results)
    lines = header(command, facts, config, database)
    lines += executed_section(rows, config)
    lines += replay_section(results, config)
    if results.diagnostics:
        lines += diagnostics_section(rows)
    return "\n".join(lines)


def write_json(path: Path, command: str, facts: dict[str, Any], config: CoreConfig, results: CoreResults) -> None:
    """Writes the raw numbers (every round, every single-step latency, in seconds) and their summaries."""
    document = {
        "command": command,
        "facts": facts,
        "config": config.as_json(),
        "goals": {"step_ratio_max": STEP_GOAL_RATIO, "replay_max_s": REPLAY_GOAL_S},
        "summary": {
            **{name: s.as_json() for name, s in summaries(results).items()},
            "replay_s": vars(Spread.of(results.replay_s)),
            "select_s": vars(Spread.of(results.select_s)),
        },
        "results": results.as_json(),
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
