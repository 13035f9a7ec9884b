"""Prometheus metrics (tidebase.ops.metrics): the process's counters and histograms after runs, executed and
replayed steps and gates; the database gauges of queues; `GET /metrics` of a real `tidebase serve` and of
`tidebase metrics serve` over HTTP, parsed with prometheus_client's parser; and the cap on workflow labels."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tidebase import DatabaseError, NotFound, RunSuspended, Tidebase
from tidebase.core.db_async import AsyncDatabase
from tidebase.ops import metrics
from tidebase.ops.metrics import METRICS, Metrics, parse
from tidebase.server.http_engine import AsyncWire

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "server"))
from server_proc import free_port, start_server, stop_server, wait_for


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[None]:
    METRICS.reset()
    yield
    METRICS.reset()


def sample(text: str, name: str, **labels: str) -> float | None:
    return parse(text).get((name, tuple(sorted(labels.items()))))


def test_counters_and_step_histograms_after_runs_and_a_replay(tide: Tidebase) -> None:
    """A run that fails after one step, then resumes: two starts, one failure, one completion; three executed steps
    and one replayed step in the histogram; every count in the exposition."""
    fail = [True]

    def wf(run: Any, input: Any) -> Any:
        run.step("a", lambda: 1)

        def b() -> int:
            if fail[0]:
                raise ValueError("not yet")
            return 2

        return run.step("b", b)

    with pytest.raises(ValueError, match="not yet"):
        tide.run("counted", wf, run_id="m-1")
    fail[0] = False
    assert tide.run("counted", wf, run_id="m-1") == 2
    assert METRICS.runs_started.value(("counted",)) == 2
    assert METRICS.runs_failed.value(("counted", "failed")) == 1
    assert METRICS.runs_completed.value(("counted",)) == 1
    assert METRICS.steps.count(("counted", "executed")) == 2  # a, then b on the second invocation
    assert METRICS.steps.count(("counted", "replayed")) == 1
    text = metrics.render().decode()
    assert sample(text, "tidebase_runs_started_total", workflow="counted") == 2
    assert sample(text, "tidebase_runs_failed_total", workflow="counted", outcome="failed") == 1
    assert sample(text, "tidebase_step_duration_seconds_count", workflow="counted", mode="replayed") == 1
    assert sample(text, "tidebase_step_duration_seconds_bucket", workflow="counted", mode="executed", le="+Inf") == 2
    assert sample(text, "tidebase_lease_takeovers_total") == 0


def test_gate_wait_suspension_and_database_errors_are_counted(tide: Tidebase, dsn: str) -> None:
    """A suspended run counts as stopped (suspended); resolving its gate observes the wait; a failing database call
    counts a database error by class."""

    def approval(run: Any, input: Any) -> Any:
        run.gates.begin("ok", "Ship?")
        return run.gate("ok", suspend=True)

    with pytest.raises(RunSuspended) as raised:
        tide.run("gated", approval, run_id="m-g")
    assert METRICS.runs_stopped.value(("gated", "suspended")) == 1
    assert raised.value.gate_id is not None
    tide.gates.resolve(raised.value.gate_id, "approved", actor="ops")
    assert METRICS.gate_wait.count() == 1
    db = tide.engine.require_database()
    with pytest.raises(DatabaseError):
        db.fetchone("get_run", {"run_id": object()})  # a parameter the driver cannot adapt
    with pytest.raises(NotFound):  # a refusal by the rules (SQLSTATE TB001) is not a database error
        db.fetchone("acquire_run", {"run_id": "missing", "owner": "o", "lease_ms": 1000, "dead_owner": None,
                                    "resume_queue": None})
    assert sum(v for _, v in METRICS.database_errors.samples()) == 1


def test_queue_gauges_read_depth_and_the_oldest_due_run(tide: Tidebase) -> None:
    """Per queue: every queued run in the depth (delayed ones too), the age of the oldest due one; a queue with only
    delayed runs has age 0; queues without queued runs are absent."""
    tide.enqueue("w", queue="alpha", run_id="q-1")
    tide.enqueue("w", queue="alpha", run_id="q-2", priority=5)
    tide.enqueue("w", queue="beta", run_id="q-3", delay=3600)
    conninfo = tide.engine.require_database().pool.conninfo
    with psycopg.connect(conninfo, autocommit=True) as db:  # q-1 due an hour ago, q-2 ten minutes ago
        db.execute("UPDATE tidebase.runs SET available_at = tidebase.now() - CASE id WHEN 'q-1' THEN interval "
                   "'1 hour' ELSE interval '10 minutes' END WHERE id IN ('q-1', 'q-2')")
    rows = {r["queue"]: r for r in metrics.queue_gauges(conninfo)}
    assert set(rows) == {"alpha", "beta"}
    assert rows["alpha"]["depth"] == 2 and 3600 <= rows["alpha"]["oldest_age"] < 3660
    assert rows["beta"]["depth"] == 1 and rows["beta"]["oldest_age"] is None
    text = metrics.render(list(rows.values()), scrape_error=False).decode()
    assert sample(text, "tidebase_queue_depth", queue="alpha") == 2
    assert sample(text, "tidebase_queue_oldest_age_seconds", queue="beta") == 0
    assert sample(text, "tidebase_scrape_database_error") == 0


def test_the_depth_query_reads_the_partial_index_only(tide: Tidebase, db: psycopg.Connection[Any]) -> None:
    """The gauges' statement is served by index scans of runs_queue_due (no sequential scan of the runs table)."""
    for i in range(20):
        tide.enqueue("w", queue=f"q{i % 3}", run_id=f"ix-{i}")
    db.execute("SET enable_seqscan = off")  # on a tiny table the planner would scan it whatever the indexes
    db.execute("ANALYZE tidebase.runs")
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + metrics.DEPTH_QUERY.replace("%(cap)s", "10000")))
    assert "Seq Scan on runs" not in plan and "runs_queue_due" in plan, plan


def test_workflow_labels_are_capped() -> None:
    """Past `max_workflows` distinct names, workflows share the `_other` label."""
    m = Metrics(max_workflows=2)
    assert [m.workflow(n) for n in ("a", "b", "c", "a", "d")] == ["a", "b", "_other", "a", "_other"]


def test_metrics_of_a_real_server_over_http(dsn: str) -> None:
    """`GET /metrics` of `tidebase serve` (with an API key: 401 without it) is a valid exposition with the queue
    gauges and the server's instruments."""
    tide = Tidebase(dsn)
    tide.enqueue("w", queue="served", run_id="s-1")
    tide.enqueue("w", queue="served", run_id="s-2")
    tide.close()
    server = start_server(dsn, api_key="metrics-key")
    try:
        assert httpx.get(server.url + "/metrics", timeout=10).status_code == 401
        with server.client() as http:
            response = http.get("/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert sample(text, "tidebase_queue_depth", queue="served") == 2
        assert sample(text, "tidebase_scrape_database_error") == 0
        assert "tidebase_reconciler_tick_seconds" in text and "tidebase_webhook_deliveries_total" in text
    finally:
        stop_server(server)
    public = start_server(dsn, api_key="metrics-key", env={"TIDEBASE_METRICS_PUBLIC": "1"})
    try:
        response = httpx.get(public.url + "/metrics", timeout=10)
        assert response.status_code == 200 and sample(response.text, "tidebase_queue_depth", queue="served") == 2
        assert httpx.get(public.url + "/runs", timeout=10).status_code == 401  # only /metrics is public
    finally:
        stop_server(public)


def test_tidebase_metrics_serve_over_http(dsn: str) -> None:
    """`tidebase metrics serve --port N` answers GET /metrics with the database gauges, read at each scrape."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEBASE_")}
    proc = subprocess.Popen([sys.executable, "-m", "tidebase", "metrics", "serve", "--port", str(port), "--dsn", dsn],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def scrape() -> str | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                return None

        first = wait_for(scrape)
        assert sample(first, "tidebase_queue_depth", queue="cli") is None
        tide = Tidebase(dsn)
        tide.enqueue("w", queue="cli", run_id="c-1")
        tide.close()
        text = scrape()
        assert text is not None and sample(text, "tidebase_queue_depth", queue="cli") == 1
        assert re.search(r"^# TYPE tidebase_runs_started_total counter$", text, re.M)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/metrics" in out.decode()


def test_an_in_process_endpoint_reads_the_dsn_at_each_scrape(tide: Tidebase, dsn: str) -> None:
    """`metrics.serve(port, conninfo=callable)` (what `tidebase worker --metrics-port` runs): the DSN is asked for at
    each scrape (None: the process's instruments only), and the process's counters are in the answer."""
    given: list[str | None] = [None]
    served = metrics.serve(0, conninfo=lambda: given[0])
    try:
        tide.run("in-process", lambda run, input: run.step("s", lambda: 1), run_id="ip-1")
        text = httpx.get(f"http://127.0.0.1:{served.port}/metrics", timeout=5).text
        assert sample(text, "tidebase_runs_completed_total", workflow="in-process") == 1
        assert sample(text, "tidebase_queue_depth", queue="ipq") is None
        tide.enqueue("w", queue="ipq", run_id="ip-2")
        given[0] = dsn
        text = httpx.get(f"http://127.0.0.1:{served.port}/metrics", timeout=5).text
        assert sample(text, "tidebase_queue_depth", queue="ipq") == 1
    finally:
        served.stop()


def test_runs_driven_over_the_http_door_are_counted(dsn: str) -> None:
    """begin, complete and fail over the HTTP door count as the library's invocations do: a start per lease taken,
    then the verdict of that invocation (the telemetry observer is installed by importing tidebase.ops, above)."""

    async def scenario() -> None:
        db = await AsyncDatabase.connect(dsn, min_size=1, max_size=2)
        wire = AsyncWire(db)
        try:
            await wire.create_run("h-1", "over-http", None, {})
            await wire.begin("h-1", "w1")
            await wire.fail("h-1", "w1", {"message": "no"}, None)
            await wire.begin("h-1", "w2")
            await wire.complete("h-1", "w2", {"ok": True})
            await wire.complete("h-1", "w2", {"ok": True})  # a retry: the same answer, not a second completion
        finally:
            await db.close()

    asyncio.run(scenario())
    assert METRICS.runs_started.value(("over-http",)) == 2
    assert METRICS.runs_failed.value(("over-http", "failed")) == 1
    assert METRICS.runs_completed.value(("over-http",)) == 1
