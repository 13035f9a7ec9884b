"""Queues: workers execute registered workflows; dedupe admits one active run per (queue, key) under concurrent
enqueues; failures retry with exponential backoff up to max_attempts; per-queue caps hold across competing claimers;
a claim never takes a run another session holds; SIGTERM drains gracefully.

Interleavings are proven with lock waits (pg_stat_activity), never with sleeps.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from fix_probe import wait_for_lock_waiters, wait_until
from tidebase import ConfigurationError, InvalidArgument, Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.ops.worker import Worker
from tidebase.sql import load_queries

Q = load_queries()


def _claim(dsn: str, app: str, owner: str, limit: int, queues: list[str] | None = None) -> list[str]:
    with psycopg.connect(conninfo.make_conninfo(dsn, application_name=app), autocommit=True) as conn:
        rows = conn.execute(Q["claim_runs"], {"owner": owner, "queues": queues or ["default"], "workflows": None,
                                              "limit": limit, "lease_ms": 30000}).fetchall()
        return [r[0] for r in rows]


def test_worker_executes_registered_workflows_from_the_queue(dsn: str) -> None:
    """Enqueued runs of a registered workflow are claimed and completed by `tide.work`; higher priority first."""
    tide = Tidebase(dsn, lease_seconds=1)
    order: list[int] = []

    @tide.workflow("double")
    def double(run: Any, input: Any) -> Any:
        order.append(input["x"])
        return run.step("double", lambda: input["x"] * 2)

    runs = [tide.enqueue("double", input={"x": x}, priority=x) for x in range(4)]
    assert {r.status for r in runs} == {"queued"}
    assert tide.work(burst=True, poll_interval=0.02, reconcile=False) == 4
    assert order == [3, 2, 1, 0]
    assert [tide.runs.get(r.id).result for r in runs] == [0, 2, 4, 6]
    tide.close()


async def test_async_worker_executes_async_workflows(dsn: str) -> None:
    """The asyncio worker runs async workflows concurrently (concurrency 3) and completes them."""
    tide = AsyncTidebase(dsn, lease_seconds=1)

    @tide.workflow("greet")
    async def greet(run: Any, input: Any) -> Any:
        async def hello() -> str:
            return f"hello {input['name']}"
        return await run.step("hello", hello)

    runs = [await tide.enqueue("greet", input={"name": str(i)}) for i in range(5)]
    assert await tide.work(concurrency=3, burst=True, poll_interval=0.02, reconcile=False) == 5
    assert [(await tide.runs.get(r.id)).result for r in runs] == [f"hello {i}" for i in range(5)]
    await tide.close()


def test_workers_only_claim_their_queues_and_registered_workflows(dsn: str) -> None:
    """A worker on queue `reports` leaves `default` alone, and never claims a workflow it has not registered."""
    tide = Tidebase(dsn, lease_seconds=1)
    tide.workflow("known")(lambda run, input: "ok")
    on_default = tide.enqueue("known")
    on_reports = tide.enqueue("known", queue="reports")
    unknown = tide.enqueue("unknown", queue="reports")
    assert tide.work(["reports"], burst=True, poll_interval=0.02, reconcile=False) == 1
    assert tide.runs.get(on_reports.id).status == "completed"
    assert tide.runs.get(on_default.id).status == "queued"
    assert tide.runs.get(unknown.id).status == "queued"
    tide.close()


def test_dedupe_admits_one_active_run_under_32_concurrent_enqueues(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """32 enqueues of one (queue, dedupe key) race while a competing insert of the key is uncommitted; they all
    queue on it; it rolls back; exactly one of the 32 creates the run and all 32 return that run."""
    tide = Tidebase(conninfo.make_conninfo(dsn, application_name="enq-"), pool_max_size=40, pool_min_size=32)
    tide.runs.list()  # open the pool (and its 32 connections) before the race
    results: list[str] = []
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            results.append(tide.enqueue("report", queue="reports", dedupe_key="daily", input={"d": 1}).id)
        except BaseException as exc:
            errors.append(exc)

    with db.transaction():
        db.execute("INSERT INTO tidebase.runs (id, workflow, status, input_hash, queue, dedupe_key, available_at) "
                   "VALUES ('blocker', 'report', 'queued', 'x', 'reports', 'daily', now())")
        threads = [threading.Thread(target=enqueue) for _ in range(32)]
        for t in threads:
            t.start()
        wait_for_lock_waiters(observer, "enq-", 32)
        db.execute("ROLLBACK")  # leave the transaction block without committing the blocker
        db.execute("BEGIN")
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 32 and len(set(results)) == 1
    assert db.execute("SELECT count(*) FROM tidebase.runs WHERE dedupe_key = 'daily'").fetchone() == (1,)
    # once that run is no longer active, the key admits a new one
    db.execute("UPDATE tidebase.runs SET status = 'completed' WHERE dedupe_key = 'daily'")
    assert tide.enqueue("report", queue="reports", dedupe_key="daily").id != results[0]
    tide.close()


def test_failures_retry_with_exponential_backoff_then_max_retries(dsn: str) -> None:
    """A run that always fails is attempted max_attempts (3) times, with retry delays doubling, then marked failed
    with failure class `max_retries`."""
    tide = Tidebase(dsn, lease_seconds=1)
    attempts: list[int] = []

    @tide.workflow("flaky")
    def flaky(run: Any, input: Any) -> Any:
        attempts.append(run.attempt)
        raise RuntimeError("boom")

    run = tide.enqueue("flaky", max_attempts=3, retry_backoff=0.05)
    worker_done = threading.Event()

    def work() -> None:
        w = Worker(tide, poll_interval=0.01, reconcile=False, handle_signals=False)
        stopper = threading.Thread(target=lambda: (wait_until(lambda: tide.runs.get(run.id).status == "failed",
                                                              "the run to fail for good"), w.stop()))
        stopper.start()
        w.run()
        stopper.join()
        worker_done.set()

    work()
    assert worker_done.is_set()
    final = tide.runs.get(run.id)
    assert final.status == "failed" and final.failure_class == "max_retries"
    assert attempts == [1, 2, 3]
    events = tide.runs.events(run.id)
    retries = [e for e in events if e.type == "run.requeued"]
    assert [(e.payload["failures"], e.payload["attempt"], e.payload["maxAttempts"]) for e in retries] == [
        (1, 1, 3), (2, 2, 3)]
    starts = [e.created_at for e in events if e.type == "run.claimed"]
    gaps = [(starts[i + 1] - starts[i]).total_seconds() for i in range(2)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # 50 ms, then 100 ms
    tide.close()


def test_enqueue_validates_its_arguments(dsn: str) -> None:
    """Bad arguments are refused before anything is written."""
    tide = Tidebase(dsn)
    with pytest.raises(InvalidArgument):
        tide.enqueue("wf", max_attempts=0)
    with pytest.raises(InvalidArgument):
        tide.enqueue("wf", delay=-1)
    with pytest.raises(InvalidArgument):
        tide.enqueue("wf", recovery_webhook="ftp://example.invalid/x")
    assert tide.runs.list().runs == ()
    tide.close()


@pytest.mark.probe
def test_concurrency_cap_holds_across_4_competing_claimers(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """With concurrency 2 on a queue, 4 claimers asking for 10 runs each while the queue's row is locked all wait on
    it; once released, they claim 2 runs in total. A further claim gets nothing until one finishes."""
    tide = Tidebase(dsn)
    tide.queues.configure("default", concurrency=2)
    for _ in range(10):
        tide.enqueue("wf")
    claimed: list[list[str]] = []
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.queue_config WHERE queue = 'default' FOR UPDATE")
        threads = [threading.Thread(target=lambda i=i: claimed.append(_claim(dsn, f"claimer-{i}", f"w{i}", 10)))
                   for i in range(4)]
        for t in threads:
            t.start()
        wait_for_lock_waiters(observer, "claimer-", 4)
    for t in threads:
        t.join()
    assert sorted(len(c) for c in claimed) == [0, 0, 0, 2]  # the first one through takes what the cap allows
    assert _claim(dsn, "late", "w9", 10) == []
    info = tide.queues.get("default")
    assert (info.running, info.queued, info.concurrency) == (2, 8, 2)
    tide.close()


@pytest.mark.probe
def test_rate_cap_holds_across_competing_claimers(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """A rate cap of 3 claims per minute admits 3 claims in total among 4 racing claimers."""
    tide = Tidebase(dsn)
    tide.queues.configure("default", rate_limit=3, rate_window=60)
    for _ in range(10):
        tide.enqueue("wf")
    claimed: list[list[str]] = []
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.queue_config WHERE queue = 'default' FOR UPDATE")
        threads = [threading.Thread(target=lambda i=i: claimed.append(_claim(dsn, f"rate-{i}", f"w{i}", 10)))
                   for i in range(4)]
        for t in threads:
            t.start()
        wait_for_lock_waiters(observer, "rate-", 4)
    for t in threads:
        t.join()
    assert sum(len(c) for c in claimed) == 3
    tide.close()


@pytest.mark.probe
def test_two_workers_never_claim_the_same_run(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """A run whose row another session holds is skipped by a claim (SKIP LOCKED: no wait, no double claim); two
    claimers released together from the queue lock split the runs without overlap."""
    tide = Tidebase(dsn)
    ids = [tide.enqueue("wf", run_id=f"r{i}").id for i in range(6)]
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.runs WHERE id = 'r0' FOR UPDATE")
        got = _claim(dsn, "skipper", "w0", 1)
        assert got == ["r1"]  # r0 is held: skipped, not waited for
    claimed: list[list[str]] = []
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.queue_config WHERE queue = 'default' FOR UPDATE")
        threads = [threading.Thread(target=lambda i=i: claimed.append(_claim(dsn, f"pair-{i}", f"p{i}", 10)))
                   for i in range(2)]
        for t in threads:
            t.start()
        wait_for_lock_waiters(observer, "pair-", 2)
    for t in threads:
        t.join()
    together = claimed[0] + claimed[1]
    assert sorted(together) == sorted(set(ids) - {"r1"})
    assert len(together) == len(set(together))
    assert db.execute("SELECT count(*) FROM tidebase.runs WHERE status = 'running'").fetchone() == (6,)
    tide.close()


def test_sigterm_stops_claiming_and_releases_in_flight_runs(
    dsn: str, logtables: psycopg.Connection[Any], workers: Any
) -> None:
    """A worker given SIGTERM while a run is blocked in step s1 stops claiming (a run enqueued after the signal stays
    queued); once its grace period is over, the run finishes s1, is stopped at the next step boundary (s2 never
    runs) and handed back to its queue (run.released, lease cleared); the process exits 0."""
    db = logtables
    tide = Tidebase(dsn, lease_seconds=1)
    run = tide.enqueue("chaos", input={"steps": 3, "hold": 1, "flag": "go"})
    proc = workers.start("grace", grace=0.2)
    wait_until(lambda: db.execute("SELECT 1 FROM executions WHERE key = 's1'").fetchone() is not None, "s1 to run")
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "grace period over" in workers.log("grace"), "the grace period to end")
    later = tide.enqueue("chaos", input={"steps": 1})
    db.execute("INSERT INTO flags VALUES ('go')")
    assert proc.wait(timeout=30) == 0
    final = tide.runs.get(run.id)
    assert final.status == "queued" and final.lease_owner is None
    assert [s.key for s in final.steps if s.status == "completed"] == ["s0", "s1"]
    assert "run.released" in [e.type for e in tide.runs.events(run.id)]
    assert db.execute("SELECT count(*) FROM executions WHERE key = 's2'").fetchone() == (0,)
    assert tide.runs.get(later.id).status == "queued"
    tide.close()


def test_a_queued_run_suspended_at_a_gate_is_requeued_when_the_gate_is_resolved(dsn: str) -> None:
    """A worker-run workflow that suspends at a gate leaves the run `waiting`; approving the gate puts it back on its
    queue, and a worker resumes it with the decision (the step before the gate is not executed again)."""
    tide = Tidebase(dsn, lease_seconds=1)
    executed: list[str] = []

    @tide.workflow("approval")
    def approval(run: Any, input: Any) -> Any:
        run.step("draft", lambda: executed.append("draft"))
        return run.gate("ship", "ship it?", suspend=True).decision

    run = tide.enqueue("approval")
    tide.work(burst=True, poll_interval=0.02, reconcile=False)
    assert tide.runs.get(run.id).status == "waiting"
    gate = tide.gates.list(run_id=run.id)[0]
    tide.gates.resolve(gate.id, "approved", actor="ann")
    assert tide.runs.get(run.id).status == "queued"
    tide.work(burst=True, poll_interval=0.02, reconcile=False)
    final = tide.runs.get(run.id)
    assert (final.status, final.result) == ("completed", "approved")
    assert executed == ["draft"]
    tide.close()


def test_registry_refuses_a_second_function_for_a_name_and_a_worker_needs_one(dsn: str) -> None:
    """`@tide.workflow(name)` binds a name once (re-registering the same function is a no-op); a worker with
    nothing registered refuses to start; caps and arguments are validated; a paused queue gives no run."""
    tide = Tidebase(dsn)
    with pytest.raises(ConfigurationError):
        tide.work(burst=True)

    def one(run: Any, input: Any) -> Any:
        return 1

    assert tide.workflow("one")(one) is one
    tide.workflow("one")(one)
    with pytest.raises(ConfigurationError):
        tide.workflow("one")(lambda run, input: 2)
    assert tide.registry.names() == ["one"] and "one" in tide.registry and len(tide.registry) == 1
    with pytest.raises(ConfigurationError):
        Worker(tide, concurrency=0)
    with pytest.raises(InvalidArgument):
        tide.queues.configure("q", concurrency=-1)
    info = tide.queues.configure("q", concurrency=3, rate_limit=10, rate_window=2, paused=True)
    assert (info.concurrency, info.rate_limit, info.rate_window, info.paused) == (3, 10, 2.0, True)
    tide.enqueue("one", queue="q")
    assert _claim(dsn, "paused", "w", 5, ["q"]) == []  # a paused queue gives nothing
    tide.queues.configure("q")
    assert len(_claim(dsn, "unpaused", "w", 5, ["q"])) == 1
    tide.close()
