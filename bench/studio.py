"""`python -m bench studio`: server-side render time of the Studio's pages on big tables, and the plans behind them.

Fills a scratch database with generate_series (default: 100,000 runs with two steps and two events each, and one run
with 5,000 steps, 5,002 events, 5,000 usage records and 100 state versions), vacuums it so index-only scans apply,
starts a real `tidebase serve` on it, and requests each page repeatedly over HTTP, reading the server's own timing
(the `Server-Timing: app;dur=…` header the Studio sends: from the request reaching the Studio to its answer, i.e.
every query and the rendering, without the network). Then it EXPLAINs every statement those pages run, with the
parameters they use, and reports any sequential scan. Exit status 1 when a plan scans a big table (at full size;
`--smoke` only reports); timings never fail.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from tidebase.core.migrate import migrate
from tidebase.models import RUN_STATUSES
from tidebase.sql import load_queries

from .database import default_database_name, scratch_database

BIG = "run_big"
SMALL = 1000
SCALE = 50_000  # below this many runs, plans are reported but not judged


@dataclass(frozen=True)
class StudioConfig:
    """Table sizes and how many timed requests per page (after `warmup` untimed ones)."""

    runs: int = 100_000
    steps: int = 5_000
    repeat: int = 40
    warmup: int = 5

    @classmethod
    def smoke(cls) -> StudioConfig:
        """Small tables and few requests: checks every path in a few seconds (CI)."""
        return cls(runs=2_000, steps=200, repeat=5, warmup=1)


def fill(dsn: str, config: StudioConfig) -> None:
    """The runs, steps and events of a busy installation, and one long run; then VACUUM ANALYZE."""
    n, k = config.runs, config.steps
    statuses = "ARRAY['completed','completed','completed','completed','completed','failed','running','queued']"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"""
            INSERT INTO tidebase.runs (id, workflow, status, input, input_hash, attempt, created_at, updated_at,
                                       started_at, completed_at, queue)
            SELECT 'run_' || lpad(i::text, 8, '0'), 'workflow-' || (i % 20), ({statuses})[1 + i % 8],
                   jsonb_build_object('n', i), 'h', 1, t, t, t, t + interval '2 seconds',
                   CASE WHEN i % 8 = 7 THEN 'default' END
              FROM generate_series(1, {n}) i, LATERAL (SELECT now() - i * interval '1 second' AS t) c""")
        conn.execute("""
            INSERT INTO tidebase.steps (run_id, key, id, name, input_hash, status, output, started_at, completed_at,
                                        created_at, updated_at)
            SELECT r.id, s.key, r.id || s.key, s.key, 'h', 'completed', '{"ok": true}', r.created_at,
                   r.created_at, r.created_at, r.created_at
              FROM tidebase.runs r, (VALUES ('plan'), ('act')) s(key)""")
        conn.execute("""
            INSERT INTO tidebase.events (run_id, seq, type, payload, created_at)
            SELECT r.id, e.seq, e.type, jsonb_build_object('name', 'act'), r.created_at
              FROM tidebase.runs r, (VALUES (1, 'run.started'), (2, 'step.completed')) e(seq, type)""")
        conn.execute("INSERT INTO tidebase.event_counters (run_id, event_seq) SELECT id, 2 FROM tidebase.runs")
        # every fourth run has a gate, a child edge, a state stream with a version, a recovery and a usage record,
        # so the per-run statements meet tables big enough for the planner to prefer their indexes
        conn.execute("""
            INSERT INTO tidebase.gates (run_id, name, id, prompt, status, decision, actor, token_hash, created_at,
                                        resolved_at)
            SELECT id, 'approve', 'gate_' || id, 'ok?', s, CASE WHEN s <> 'pending' THEN s END,
                   CASE WHEN s <> 'pending' THEN 'ops' END, 'h', created_at,
                   CASE WHEN s <> 'pending' THEN created_at END
              FROM tidebase.runs, LATERAL (SELECT CASE WHEN right(id, 3)::int % 40 = 0 THEN 'pending'
                                                       ELSE 'approved' END AS s) g
             WHERE right(id, 1)::int % 4 = 0""")
        conn.execute("""
            INSERT INTO tidebase.run_edges (parent_run_id, name, id, child_run_id, edge_type)
            SELECT id, 'next', 'edge_' || id, 'run_' || lpad((right(id, 8)::int + 1)::text, 8, '0'), 'child'
              FROM tidebase.runs WHERE right(id, 1)::int % 4 = 0 AND id <> (SELECT max(id) FROM tidebase.runs)""")
        conn.execute("""
            INSERT INTO tidebase.state_streams (run_id, name, id, current_version, current_value)
            SELECT id, 'run', 'stream_' || id, 1, '{"v": 1}' FROM tidebase.runs WHERE right(id, 1)::int % 4 = 0""")
        conn.execute("""
            INSERT INTO tidebase.state_versions (run_id, stream, version, id, value, label)
            SELECT run_id, 'run', 1, 'ver_' || run_id, '{"v": 1}', 'first' FROM tidebase.state_streams""")
        conn.execute("""
            INSERT INTO tidebase.recoveries (run_id, id, reason, detected_by)
            SELECT id, 'rec_' || id, 'lease_expired', 'reconciler' FROM tidebase.runs
             WHERE right(id, 1)::int % 4 = 0""")
        conn.execute("""
            INSERT INTO tidebase.usage (run_id, id, step_key, kind, input_tokens, output_tokens, total_tokens,
                                        cost_usd, created_at)
            SELECT id, 'use_' || id, 'act', 'llm', 100, 20, 120, 0.001, created_at FROM tidebase.runs
             WHERE right(id, 1)::int % 4 = 0""")
        conn.execute(f"""
            INSERT INTO tidebase.runs (id, workflow, status, input, input_hash, attempt, created_at, updated_at,
                                       started_at)
            VALUES ('{BIG}', 'long-agent', 'running', '{{"task": "long"}}', 'h', 1, now(), now(), now())""")
        conn.execute("INSERT INTO tidebase.event_counters (run_id, event_seq) VALUES (%s, %s)", (BIG, k + 2))
        conn.execute(f"""
            INSERT INTO tidebase.steps (run_id, key, id, name, occurrence, input_hash, status, output, attempt,
                                        started_at, completed_at, created_at, updated_at)
            SELECT '{BIG}', CASE WHEN i = 1 THEN 'step' ELSE 'step#' || i END, 'step_' || i, 'step', i, md5(i::text),
                   'completed', jsonb_build_object('i', i, 'text', repeat('x', 150)), 1, t, t, t, t
              FROM generate_series(1, {k}) i, LATERAL (SELECT now() + i * interval '1 millisecond' AS t) c""")
        conn.execute(f"""
            INSERT INTO tidebase.events (run_id, seq, type, payload)
            SELECT '{BIG}', i, CASE WHEN i = 1 THEN 'run.started' ELSE 'step.completed' END,
                   jsonb_build_object('name', 'step#' || i)
              FROM generate_series(1, {k + 2}) i""")
        conn.execute(f"""
            INSERT INTO tidebase.usage (run_id, id, step_key, kind, input_tokens, output_tokens, total_tokens,
                                        cost_usd)
            SELECT '{BIG}', 'use_' || i, CASE WHEN i = 1 THEN 'step' ELSE 'step#' || i END, 'llm', 100, 20, 120,
                   0.001
              FROM generate_series(1, {k}) i""")
        conn.execute(f"""
            INSERT INTO tidebase.state_streams (run_id, name, id, current_version, current_value)
            VALUES ('{BIG}', 'run', 'stream_big', 100, '{{"progress": 100}}')""")
        conn.execute(f"""
            INSERT INTO tidebase.state_versions (run_id, stream, version, id, value, label)
            SELECT '{BIG}', 'run', v, 'ver_' || v, jsonb_build_object('progress', v),
                   CASE WHEN v % 25 = 0 THEN 'milestone-' || v END
              FROM generate_series(1, 100) v""")
        conn.execute("VACUUM ANALYZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(dsn: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TIDEBASE_")},
           "TIDEBASE_DATABASE_URL": dsn, "TIDEBASE_RECONCILER": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "tidebase", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("tidebase serve did not start")


def pages(http: httpx.Client) -> dict[str, str]:
    """The pages to time: the runs list (plain, filtered, an older page) and the long run's page."""
    older = http.get("/studio/?limit=50").text.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    return {
        "runs page (50 newest)": "/studio/?limit=50",
        "runs page, status=failed": "/studio/?status=failed",
        "runs page, workflow filter": "/studio/?workflow=workflow-7",
        "runs page, second page": older,
        "runs pulse (50 rows)": "/studio/pulse?counts=1&ids=" + ",".join(f"run_{i:08d}" for i in range(1, 51)),
        f"run page, {BIG}": f"/studio/runs/{BIG}",
        f"run page, {BIG}, steps 4801+": f"/studio/runs/{BIG}?steps=4800",
        "gates page": "/studio/gates",
        "queues page": "/studio/queues",
    }


def timings(http: httpx.Client, path: str, config: StudioConfig) -> list[float]:
    out = []
    for i in range(config.warmup + config.repeat):
        response = http.get(path)
        response.raise_for_status()
        if i >= config.warmup:
            out.append(float(response.headers["server-timing"].split("dur=")[1]))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


PLANNED: dict[str, dict[str, Any]] = {
    "list_runs": {"before_at": "9999-12-31", "before_id": "", "limit": 51, "status": None, "workflow": None},
    "list_runs_by_status": {"status": "failed", "before_at": "9999-12-31", "before_id": "", "limit": 51},
    "list_runs_by_workflow": {"workflow": "workflow-7", "before_at": "9999-12-31", "before_id": "", "limit": 51},
    "insight_status_counts": {"statuses": list(RUN_STATUSES)},
    "insight_workflows": {"limit": 200},
    "insight_pulse": {"run_ids": [f"run_{i:08d}" for i in range(1, 51)]},
    "insight_overview": {"run_id": BIG},
    "insight_child_edges": {"run_id": BIG, "limit": 500},
    "insight_parent_edges": {"run_id": BIG},
    "insight_steps_page": {"run_id": BIG, "offset": 4800, "limit": 200},
    "insight_recent_events": {"run_id": BIG, "limit": 200},
    "insight_streams": {"run_id": BIG},
    "insight_versions": {"run_id": BIG, "stream": "run", "before": 2**62, "limit": 100},
    "labeled_versions": {"run_id": BIG},
    "list_gates_of_run": {"run_id": BIG, "status": None, "limit": 1000},
    "insight_step_usage": {"run_id": BIG, "limit": 50},
    "insight_usage_totals": {"run_id": BIG},
    "insight_decisions": {"limit": 50},
    "recoveries_of_run": {"run_id": BIG},
    "deliveries_of_run": {"run_id": BIG},
    "list_gates": {"status": "pending", "limit": 100},
}


def scans(plan: dict[str, Any]) -> list[str]:
    """Every scan node of a plan, as `Node Type on relation (index)`."""
    found = []
    if "Scan" in plan["Node Type"]:
        where = plan.get("Relation Name") or plan.get("Function Name") or ""
        index = f" ({plan['Index Name']})" if plan.get("Index Name") else ""
        found.append(f"{plan['Node Type']} on {where}{index}".strip())
    for child in plan.get("Plans", []):
        found.extend(scans(child))
    return found


def explain(dsn: str) -> list[tuple[str, list[str], bool]]:
    """(statement, scans, fine) for every statement the timed pages run: a sequential scan is fine only on a table
    of at most SMALL rows (the outbox of this benchmark, say), where the planner rightly prefers it."""
    queries = load_queries()
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        sizes = dict(conn.execute("SELECT relname, reltuples FROM pg_class WHERE relnamespace = "
                                  "'tidebase'::regnamespace AND relkind = 'r'").fetchall())
        for name, params in PLANNED.items():
            row = conn.execute("EXPLAIN (FORMAT JSON) " + queries[name], params).fetchone()  # type: ignore[arg-type]
            assert row is not None
            found = scans(json.loads(row[0])[0]["Plan"] if isinstance(row[0], str) else row[0][0]["Plan"])
            big = [s for s in found if s.startswith("Seq Scan") and sizes.get(s.split(" on ")[1], 0) > SMALL]
            out.append((name, found, not big))
    return out


def run_studio(admin_dsn: str, config: StudioConfig, database: str | None = None) -> int:
    with scratch_database(admin_dsn, database or default_database_name()) as dsn:
        migrate(dsn)
        started = time.monotonic()
        fill(dsn, config)
        print(f"filled {config.runs:,} runs and a run of {config.steps:,} steps in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)
        proc, url = serve(dsn)
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                rows = [(label, timings(http, path, config)) for label, path in pages(http).items()]
        finally:
            proc.terminate()
            proc.wait(10)
        plans = explain(dsn)
    print(f"Studio pages, server-side time over {config.repeat} requests each "
          f"({config.runs:,} runs; {BIG} has {config.steps:,} steps)\n")
    print(f"{'page':<34} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for label, values in rows:
        print(f"{label:<34} {statistics.median(values):8.1f} {percentile(values, 0.95):8.1f} {max(values):8.1f}")
    print("\nPlans (EXPLAIN, the statements of the pages above)\n")
    for name, found, ok in plans:
        print(f"{'ok ' if ok else 'BAD'} {name:<24} {'; '.join(dict.fromkeys(found))}")
    if config.runs < SCALE:
        print(f"\n(smoke: with fewer than {SCALE:,} runs a plan may rightly prefer a sequential scan; not judged)")
        return 0
    return 0 if all(ok for _, _, ok in plans) else 1
