"""Worker numbers: `python -m bench.workers [--dsn ADMIN_DSN] [--runs N] [--trials K] [--table-size M] [--json PATH]`.

Three measurements, each on a scratch database of its own (created on the server named by the admin DSN, dropped at
exit):
- claim throughput: N queued one-step runs drained by 4 worker processes (concurrency 4 each): runs/s end to end
  (claim with a new lease, load checkpoints, one executed step, complete);
- recovery latency after SIGKILL: a worker is killed inside a step, another worker is idle; the time from the kill
  to the run's next `run.claimed` (database clock), with lease L and reconciler interval T (bound: L + T);
- the reconciler tick on a table of M runs (default 1,000,000, almost all finished): the time of one tick when little
  is due, and the plans of its statements (index scans, no sequential scan of runs).

Standalone on purpose (not wired into `python -m bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from tidebase import Reconciler, Tidebase

from .database import DEFAULT_ADMIN_DSN, scratch_database


def _worker(dsn: str, lease: float, concurrency: int) -> None:
    """The worker process the measurements start (`python -m bench.workers _worker DSN LEASE CONCURRENCY`)."""
    tide = Tidebase(dsn, lease_seconds=lease, pool_max_size=concurrency * 2 + 4)
    log = psycopg.connect(dsn, autocommit=True)

    @tide.workflow("noop")
    def noop(run: Any, input: Any) -> Any:
        return run.step("one", lambda: 1)

    @tide.workflow("hold")
    def hold(run: Any, input: Any) -> Any:
        def body() -> int:
            log.execute("INSERT INTO entered VALUES (%s)", (run.run_id,))
            while log.execute("SELECT 1 FROM released WHERE run_id = %s", (run.run_id,)).fetchone() is None:
                time.sleep(0.01)
            return 1
        return run.step("hold", body)

    tide.work(["default"], concurrency=concurrency, poll_interval=0.02, reconcile_interval=float(
        os.environ.get("BENCH_TICK", "0.2")), shutdown_grace=1)


def _spawn(dsn: str, lease: float, concurrency: int, tick: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.workers", "_worker", dsn, str(lease), str(concurrency)],
                            env={**os.environ, "BENCH_TICK": str(tick)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def throughput(dsn: str, runs: int, workers: int = 4, concurrency: int = 4) -> dict[str, Any]:
    tide = Tidebase(dsn)
    for _ in range(runs):
        tide.enqueue("noop")
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        procs = [_spawn(dsn, 30, concurrency, 5.0) for _ in range(workers)]
        try:
            while True:
                row = conn.execute("SELECT count(*) FROM tidebase.runs WHERE status <> 'completed'").fetchone()
                if row == (0,):
                    break
                time.sleep(0.01)
            elapsed = time.perf_counter() - start
        finally:
            _stop(procs)
    tide.close()
    return {"runs": runs, "workers": workers, "concurrency_each": concurrency, "seconds": round(elapsed, 3),
            "runs_per_second": round(runs / elapsed, 1),
            "note": "includes worker process start-up (about 0.3 s)"}


def recovery(dsn: str, trials: int, lease: float, tick: float) -> dict[str, Any]:
    tide = Tidebase(dsn)
    latencies: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE entered (run_id text)")
        conn.execute("CREATE TABLE released (run_id text)")
        for _ in range(trials):
            victim = _spawn(dsn, lease, 1, tick)
            run = tide.enqueue("hold")
            while conn.execute("SELECT 1 FROM entered WHERE run_id = %s", (run.id,)).fetchone() is None:
                time.sleep(0.005)
            rescuer = _spawn(dsn, lease, 1, tick)
            time.sleep(0.5)  # let the rescuer start up: its start-up is not part of the recovery
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed = conn.execute("SELECT tidebase.now()").fetchone()
            assert killed is not None
            conn.execute("INSERT INTO released VALUES (%s)", (run.id,))
            while True:
                row = conn.execute("SELECT created_at FROM tidebase.events WHERE run_id = %s AND type = 'run.claimed' "
                                   "AND created_at > %s ORDER BY seq LIMIT 1", (run.id, killed[0])).fetchone()
                if row is not None:
                    break
                time.sleep(0.005)
            latencies.append((row[0] - killed[0]).total_seconds())
            _stop([rescuer])
    tide.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return {"trials": trials, "lease_seconds": lease, "tick_seconds": tick, "bound_seconds": lease + tick,
            "p50": round(statistics.median(latencies), 3), "p99": round(p99, 3), "max": round(latencies[-1], 3)}


def tick_cost(dsn: str, size: int, repeats: int = 20) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = time.perf_counter()
        conn.execute("""
            INSERT INTO tidebase.runs (id, workflow, status, input_hash, queue, available_at, lease_expires_at,
                                       deadline_at, lease_owner, completed_at)
            SELECT 'r' || i, 'wf',
                   CASE WHEN i %% 1000 = 0 THEN 'queued' WHEN i %% 10000 = 1 THEN 'running' ELSE 'completed' END,
                   'h', 'q' || (i %% 8), now(), CASE WHEN i %% 10000 = 1 THEN now() + interval '1 hour' END,
                   CASE WHEN i %% 2000 = 0 THEN now() + interval '1 hour' END,
                   CASE WHEN i %% 10000 = 1 THEN 'w' END, now()
              FROM generate_series(1, %s) AS i""", (size,))
        conn.execute("VACUUM ANALYZE tidebase.runs")
        load = time.perf_counter() - t0
        plans = {}  # the functions compare with a value computed once (v_now); now() stands for it here
        for name, sql in {
            "recover_expired": "SELECT id FROM tidebase.runs WHERE status = 'running' AND queue IS NOT NULL "
                               "AND lease_expires_at < now() ORDER BY lease_expires_at LIMIT 500 "
                               "FOR UPDATE SKIP LOCKED",
            "cancel_overdue": "SELECT id FROM tidebase.runs WHERE deadline_at IS NOT NULL AND status IN "
                              "('pending', 'queued', 'running', 'waiting') AND deadline_at < now() "
                              "ORDER BY deadline_at LIMIT 500 FOR UPDATE SKIP LOCKED",
        }.items():
            rows = conn.execute("EXPLAIN " + sql).fetchall()
            plans[name] = [r[0] for r in rows]
    tide = Tidebase(dsn)
    reconciler = Reconciler(tide)
    reconciler.tick()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        reconciler.tick()
        times.append(time.perf_counter() - t)
    tide.close()
    return {"runs": size, "load_seconds": round(load, 1), "tick_ms_p50": round(statistics.median(times) * 1000, 2),
            "tick_ms_max": round(max(times) * 1000, 2), "plans": plans}


def _migrate(dsn: str) -> None:
    with Tidebase(dsn) as tide:
        tide.migrate()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "_worker":
        _worker(args[1], float(args[2]), int(args[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("TIDEBASE_BENCH_DSN", DEFAULT_ADMIN_DSN))
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--tick", type=float, default=0.2)
    parser.add_argument("--table-size", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(args)
    results: dict[str, Any] = {}
    with scratch_database(opts.dsn, f"tidebase_bench_workers_{os.getpid()}") as dsn:
        _migrate(dsn)
        results["claim_throughput"] = throughput(dsn, opts.runs)
        print(json.dumps({"claim_throughput": results["claim_throughput"]}), flush=True)
    with scratch_database(opts.dsn, f"tidebase_bench_recovery_{os.getpid()}") as dsn:
        _migrate(dsn)
        results["recovery_latency"] = recovery(dsn, opts.trials, opts.lease, opts.tick)
        print(json.dumps({"recovery_latency": results["recovery_latency"]}), flush=True)
    with scratch_database(opts.dsn, f"tidebase_bench_tick_{os.getpid()}") as dsn:
        _migrate(dsn)
        results["reconciler_tick"] = tick_cost(dsn, opts.table_size)
        print(json.dumps({"reconciler_tick": results["reconciler_tick"]}, indent=2), flush=True)
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
