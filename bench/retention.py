"""`python -m bench retention`: how fast retention deletes, what a live run feels meanwhile, and what space is left.

Seeds a scratch database with generate_series INSERTs: N finished (completed) root runs, 60 days old, each with M
events, M/10 steps and one state stream with one version (the target scale is 1,000,000 runs of 100 events; `--runs`
and `--events-per-run` scale it down, and the output states the scale used). Then it vacuums (so the candidate scan
is index-only, as on a settled table), starts a live run whose workflow executes `run.step` in a loop, and runs
`tide.gc(older_than="30d")` while that loop goes on. It reports the deletion rate (runs/s and rows/s, elapsed, batches),
the live steps' latency before and during the pass (the longest step during the pass bounds any lock wait it had),
how often the live run's session was seen waiting for a lock (pg_stat_activity, sampled every 5 ms during the pass),
and the tables' and indexes' sizes before and after a plain VACUUM (which makes the space reusable; only VACUUM FULL
or pg_repack would return it to the operating system).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import conninfo

from tidebase import Tidebase
from tidebase.core.migrate import migrate

from .database import default_database_name, scratch_database

TABLES = ("runs", "steps", "events", "state_streams", "state_versions")
CHUNK = 20_000  # runs per seeding statement: progress lines, and no single huge transaction
HOT_APP = "bench-retention-hot"
GC_APP = "bench-retention-gc"


@dataclass(frozen=True)
class RetentionConfig:
    """The seeded scale and the batch size of the pass."""

    runs: int = 1_000_000
    events_per_run: int = 100
    batch: int = 1000

    @classmethod
    def smoke(cls) -> RetentionConfig:
        """A few thousand rows: checks every path in seconds (CI)."""
        return cls(runs=2_000, events_per_run=10, batch=500)


def seed(dsn: str, config: RetentionConfig) -> None:
    """N old completed runs with their events, steps and state, in chunks of CHUNK runs."""
    steps = max(1, config.events_per_run // 10)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for lo in range(1, config.runs + 1, CHUNK):
            hi = min(lo + CHUNK - 1, config.runs)
            params = {"lo": lo, "hi": hi, "m": config.events_per_run, "s": steps}
            conn.execute(
                "INSERT INTO tidebase.runs (id, workflow, status, input, input_hash, result, created_at, updated_at, "
                "started_at, completed_at) "
                "SELECT 'old_' || g, 'bench', 'completed', '{}', 'h', '{\"ok\": true}', t, t, t, t "
                "FROM generate_series(%(lo)s::int, %(hi)s::int) g, "
                "LATERAL (SELECT now() - interval '60 days' + g * interval '1 ms' AS t) x", params)
            conn.execute(
                "INSERT INTO tidebase.event_counters (run_id, event_seq) "
                "SELECT 'old_' || g, %(m)s FROM generate_series(%(lo)s::int, %(hi)s::int) g", params)
            conn.execute(
                "INSERT INTO tidebase.events (run_id, seq, type, payload, created_at) "
                "SELECT 'old_' || g, s, 'step.completed', jsonb_build_object('key', 'step' || s, 'output', s), "
                "now() - interval '60 days' FROM generate_series(%(lo)s::int, %(hi)s::int) g, "
                "generate_series(1, %(m)s::int) s", params)
            conn.execute(
                "INSERT INTO tidebase.steps (run_id, key, id, name, input_hash, status, output, completed_at) "
                "SELECT 'old_' || g, 'step' || s, 'step_' || g || '_' || s, 'step', 'h', 'completed', "
                "jsonb_build_object('value', repeat('x', 200)), now() - interval '60 days' "
                "FROM generate_series(%(lo)s::int, %(hi)s::int) g, generate_series(1, %(s)s::int) s", params)
            conn.execute(
                "INSERT INTO tidebase.state_streams (run_id, name, id, current_version, current_value) "
                "SELECT 'old_' || g, 'run', 'stream_' || g, 1, '{\"progress\": 1}' "
                "FROM generate_series(%(lo)s::int, %(hi)s::int) g", params)
            conn.execute(
                "INSERT INTO tidebase.state_versions (run_id, stream, version, id, value) "
                "SELECT 'old_' || g, 'run', 1, 'ver_' || g, '{\"progress\": 1}' "
                "FROM generate_series(%(lo)s::int, %(hi)s::int) g", params)
            print(f"  seeded {hi:,} / {config.runs:,} runs", file=sys.stderr)


def sizes(dsn: str) -> dict[str, tuple[int, int]]:
    """(table bytes with TOAST, index bytes) per table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {t: tuple(conn.execute(  # type: ignore[misc]
            "SELECT pg_table_size(%(t)s::regclass), pg_indexes_size(%(t)s::regclass)",
            {"t": f"tidebase.{t}"}).fetchone() or (0, 0)) for t in TABLES}


def vacuum(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for t in TABLES:
            conn.execute(f"VACUUM (ANALYZE) tidebase.{t}")


class HotLoop:
    """A live run executing `run.step` in a loop on its own pool, timing each step, until stopped."""

    def __init__(self, dsn: str) -> None:
        self.tide = Tidebase(conninfo.make_conninfo(dsn, application_name=HOT_APP))
        self.stop = threading.Event()
        self.marks: list[tuple[float, float]] = []  # (start, seconds) of each step
        self.thread = threading.Thread(target=self._run, name="hot-loop")

    def _workflow(self, run: Any, input: Any) -> int:
        n = 0
        while not self.stop.is_set():
            began = time.monotonic()
            run.step("tick", lambda n=n: n, input=n)
            self.marks.append((began, time.monotonic() - began))
            n += 1
        return n

    def _run(self) -> None:
        self.tide.run("hot", self._workflow, run_id="hot")

    def between(self, start: float, end: float) -> list[float]:
        return [d for s, d in self.marks if start <= s < end]


def sample_lock_waits(dsn: str, stop: threading.Event, found: list[int]) -> None:
    """Samples the live run's sessions every 5 ms: found[0] counts samples in which one waits for a lock held by the
    retention pass's session, found[1] those in which it waits for another (its own heartbeat renewing the lease
    holds the run row for a moment), found[2] all samples."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE g.blocker), count(*) FILTER (WHERE NOT g.blocker) "
                "FROM (SELECT EXISTS (SELECT 1 FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid)) "
                "AND b.application_name = %s) AS blocker FROM pg_stat_activity a "
                "WHERE a.application_name = %s AND a.wait_event_type = 'Lock') g", (GC_APP, HOT_APP)).fetchone()
            found[0] += 1 if row and row[0] else 0
            found[1] += 1 if row and row[1] else 0
            found[2] += 1
            time.sleep(0.005)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def run_retention(admin_dsn: str, config: RetentionConfig, database: str | None = None) -> int:
    total_events = config.runs * config.events_per_run
    target = RetentionConfig()
    with scratch_database(admin_dsn, database or default_database_name()) as dsn:
        migrate(dsn)
        started = time.monotonic()
        seed(dsn, config)
        seeded = time.monotonic() - started
        vacuum(dsn)
        before = sizes(dsn)
        hot = HotLoop(dsn)
        hot.thread.start()
        while len(hot.marks) < 60:  # a baseline of steps before the pass (and the pool warm)
            time.sleep(0.01)
        waits = [0, 0, 0]
        stop_sampling = threading.Event()
        sampler = threading.Thread(target=sample_lock_waits, args=(dsn, stop_sampling, waits))
        sampler.start()
        tide = Tidebase(conninfo.make_conninfo(dsn, application_name=GC_APP), statement_timeout=300)
        gc_start = time.monotonic()
        result = tide.gc("30d", batch=config.batch)
        gc_end = time.monotonic()
        stop_sampling.set()
        sampler.join()
        hot.stop.set()
        hot.thread.join(60)
        tide.close()
        hot.tide.close()
        vacuum(dsn)
        after = sizes(dsn)
    baseline = [d for _, d in hot.marks[10:50]]  # after the first steps, which warm the pool and the plans
    during = hot.between(gc_start, gc_end) or [0.0]
    elapsed = gc_end - gc_start
    scaled = "" if (config.runs, config.events_per_run) == (target.runs, target.events_per_run) else (
        f" (scaled down from the target {target.runs:,} runs x {target.events_per_run} events)")
    print(f"Retention: {config.runs:,} finished runs x {config.events_per_run} events = {total_events:,} events"
          f"{scaled}; seeded in {seeded:.1f} s\n")
    print(f"deleted {result.runs:,} runs in {elapsed:.1f} s: {result.runs / elapsed:,.0f} runs/s, "
          f"{result.rows.get('events', 0) / elapsed:,.0f} events/s ({result.batches} batches of {config.batch})")
    print("rows deleted: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.rows.items()) if v))
    print(f"live run.step before the pass: p50 {ms(statistics.median(baseline))}, max {ms(max(baseline))} "
          f"({len(baseline)} steps)")
    print(f"live run.step during the pass: p50 {ms(statistics.median(during))}, p99 "
          f"{ms(sorted(during)[int(0.99 * (len(during) - 1))])}, max {ms(max(during))} ({len(during)} steps); "
          f"samples waiting for a lock held by the pass: {waits[0]} of {waits[2]} "
          f"(for another lock, e.g. the run's own heartbeat: {waits[1]})")
    print("\nsizes (table incl. TOAST + indexes), after VACUUM before the pass -> after the pass and a VACUUM")
    for t in TABLES:
        (tb, ib), (ta, ia) = before[t], after[t]
        print(f"  {t:<15} {mib(tb):>9} + {mib(ib):>9} -> {mib(ta):>9} + {mib(ia):>9}")
    return 0 if result.runs == config.runs else 1


def mib(n: int) -> str:
    return f"{n / 1048576:,.1f} MiB"
