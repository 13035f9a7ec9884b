"""I5 under contention: a gate resolves exactly once among racing resolvers, and a blocked waiter is woken by the
doorbell of another client's resolve.

Hand-written per flavour: threads (sync API) and tasks (async API). Racers are proven to be queued on the run row
with lock waits seen in pg_stat_activity; waiters are proven to be listening before the resolve, and the poll
interval is raised out of reach so that only the notification can wake them. Deadlines only turn a hang into a
failure; no sleep decides an outcome.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

import tidebase.agents.gates
import tidebase.agents.gates_async
from fix_probe import wait_for_lock_waiters, wait_until
from tidebase import GateAlreadyResolved, LeaseLost, RunCancelled, RunSuspended, Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.sql import load_queries

pytestmark = pytest.mark.probe
RESOLVERS = 50
DECISIONS = ("approved", "rejected", "canceled")
# The start of the get_gate statement (its description line), as pg_stat_activity shows it: on a waiter's
# listening connection, it is the re-read that follows LISTEN.
GET_GATE = load_queries()["get_gate"].splitlines()[0]


def named(dsn: str, application_name: str) -> str:
    return conninfo.make_conninfo(dsn, application_name=application_name)


def suspend_at_gate(tide: Tidebase, run_id: str) -> str:
    """Creates run `run_id` parked at a pending gate; returns the gate id."""
    with pytest.raises(RunSuspended) as info:
        tide.run("review", lambda run, input: run.gate("approve", "ok?", suspend=True).decision, run_id=run_id)
    return str(info.value.gate_id)


def check_one_winner(outcomes: list[Any], db: psycopg.Connection[Any], run_id: str, gate_id: str) -> None:
    """Exactly one resolver got the resolved gate; every other one got GateAlreadyResolved naming the winner."""
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    lost = [o for o in outcomes if isinstance(o, GateAlreadyResolved)]
    assert len(outcomes) == RESOLVERS and len(won) == 1 and len(lost) == RESOLVERS - 1
    winner = won[0]
    assert winner.id == gate_id and winner.status == winner.decision and winner.actor is not None
    assert {(e.decision, e.actor) for e in lost} == {(winner.decision, winner.actor)}
    row = db.execute("SELECT status, actor FROM tidebase.gates WHERE id = %s", (gate_id,)).fetchone()
    assert row == (winner.decision, winner.actor)
    seqs = db.execute("SELECT seq, type FROM tidebase.events WHERE run_id = %s ORDER BY seq", (run_id,)).fetchall()
    assert [s for s, _ in seqs] == list(range(1, len(seqs) + 1))
    assert [t for _, t in seqs].count("gate.resolved") == 1


def listening_waiter(observer: psycopg.Connection[Any], application_name: str) -> bool:
    """True once a session of `application_name` has finished the re-read that follows its LISTEN."""
    row = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s "
        "AND state = 'idle' AND starts_with(query, %s)", (application_name, GET_GATE)).fetchone()
    return row is not None and row[0] > 0


def test_50_threads_resolving_one_gate_have_exactly_one_winner(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """50 threads resolve one gate with mixed decisions while its run row is locked; once released, exactly one
    resolve returns and the 49 others raise GateAlreadyResolved carrying that winner's decision and actor."""
    with Tidebase(dsn) as tide:
        gate_id = suspend_at_gate(tide, "race-1")
    racers = Tidebase(named(dsn, "gate-racer"), pool_max_size=RESOLVERS + 2)
    racers.gates.get(gate_id)  # open the pool (and check the schema) before the race
    outcomes: list[Any] = [None] * RESOLVERS

    def resolve(i: int) -> None:
        try:
            outcomes[i] = racers.gates.resolve(gate_id, DECISIONS[i % 3], actor=f"racer-{i}")
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=resolve, args=(i,), daemon=True) for i in range(RESOLVERS)]
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.runs WHERE id = 'race-1' FOR UPDATE")
        for t in threads:
            t.start()
        wait_for_lock_waiters(observer, "gate-racer", RESOLVERS, timeout=60)  # all 50 queued on the run row
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    check_one_winner(outcomes, db, "race-1", gate_id)
    racers.close()


async def test_50_tasks_resolving_one_gate_have_exactly_one_winner(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """The asyncio flavour: 50 tasks resolve one gate while its run row is locked; exactly one wins, and the other 49
    get GateAlreadyResolved with the winning decision."""
    with Tidebase(dsn) as tide:
        gate_id = suspend_at_gate(tide, "arace-1")
    racers = AsyncTidebase(named(dsn, "gate-aracer"), pool_max_size=RESOLVERS + 2)
    await racers.gates.get(gate_id)
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.runs WHERE id = 'arace-1' FOR UPDATE")
        tasks = [asyncio.create_task(racers.gates.resolve(gate_id, DECISIONS[i % 3], actor=f"aracer-{i}"))
                 for i in range(RESOLVERS)]
        await asyncio.to_thread(wait_for_lock_waiters, observer, "gate-aracer", RESOLVERS, 60)
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    check_one_winner(list(outcomes), db, "arace-1", gate_id)
    await racers.close()


def test_blocked_thread_waiter_wakes_on_the_doorbell(
    dsn: str, observer: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run blocked in run.gate() in a thread keeps its lease, and returns the decision once another client
    resolves the gate: woken by the notification, since its poll interval is out of reach."""
    monkeypatch.setattr(tidebase.agents.gates, "POLL_INTERVAL", 3600.0)
    waiter, resolver = Tidebase(named(dsn, "gate-waiter")), Tidebase(dsn)
    result: dict[str, Any] = {}

    def wf(run: Any, input: Any) -> Any:
        decision = run.gate("approve", "Ship it?", data={"pr": 1})
        return {"decision": decision.decision, "actor": decision.actor, "payload": decision.payload}

    thread = threading.Thread(target=lambda: result.setdefault("r", waiter.run("w", wf, run_id="wake-1")), daemon=True)
    thread.start()
    wait_until(lambda: listening_waiter(observer, "gate-waiter"), "the waiter to listen")
    assert resolver.runs.get("wake-1").status == "running"  # blocking keeps the lease: no suspension
    [gate] = resolver.gates.list(run_id="wake-1")
    resolver.gates.resolve(gate.id, "approved", actor="alice", payload={"ok": 1})
    thread.join(30)
    assert not thread.is_alive()
    assert result["r"] == {"decision": "approved", "actor": "alice", "payload": {"ok": 1}}
    assert resolver.runs.get("wake-1").status == "completed"
    waiter.close()
    resolver.close()


async def test_blocked_task_waiter_wakes_on_the_doorbell(
    dsn: str, observer: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The asyncio flavour: a run blocked in run.gate() in a task returns the decision when another client resolves
    the gate, woken by the notification alone."""
    monkeypatch.setattr(tidebase.agents.gates_async, "POLL_INTERVAL", 3600.0)
    waiter, resolver = AsyncTidebase(named(dsn, "gate-awaiter")), AsyncTidebase(dsn)

    async def wf(run: Any, input: Any) -> Any:
        decision = await run.gate("approve", "Ship it?")
        return [decision.decision, decision.actor]

    task = asyncio.create_task(waiter.run("w", wf, run_id="awake-1"))
    await asyncio.to_thread(wait_until, lambda: listening_waiter(observer, "gate-awaiter"), "the waiter to listen")
    assert not task.done()
    [gate] = await resolver.gates.list(run_id="awake-1")
    await resolver.gates.resolve(gate.id, "rejected", actor="bob")
    assert await asyncio.wait_for(task, 30) == ["rejected", "bob"]
    await waiter.close()
    await resolver.close()


async def test_cancelling_the_run_ends_a_blocked_wait_with_run_cancelled(
    dsn: str, observer: psycopg.Connection[Any]
) -> None:
    """Cancelling a run whose workflow is blocked at a gate ends the wait with RunCancelled; the gate is canceled
    with the run and no failure is recorded."""
    waiter, operator = AsyncTidebase(named(dsn, "gate-cwaiter")), AsyncTidebase(dsn)

    async def wf(run: Any, input: Any) -> Any:
        return (await run.gate("approve", "ok?")).decision

    task = asyncio.create_task(waiter.run("w", wf, run_id="cw-1"))
    await asyncio.to_thread(wait_until, lambda: listening_waiter(observer, "gate-cwaiter"), "the waiter to listen")
    await operator.runs.cancel("cw-1", reason="no longer needed")
    with pytest.raises(RunCancelled):
        await asyncio.wait_for(task, 30)
    run = await operator.runs.get("cw-1")
    assert (run.status, run.error) == ("cancelled", None)
    assert [g.status for g in await operator.gates.list(None, run_id="cw-1")] == ["canceled"]
    await waiter.close()
    await operator.close()


def test_lost_lease_ends_a_blocked_wait_with_lease_lost(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """When a blocked waiter's lease is taken over, its heartbeat is refused and the wait ends with LeaseLost
    instead of waiting on under a lease it no longer holds."""
    waiter = Tidebase(named(dsn, "gate-lwaiter"), lease_seconds=1.5)
    outcome: dict[str, Any] = {}

    def wf(run: Any, input: Any) -> Any:
        return run.gate("approve", "ok?").decision

    def target() -> None:
        try:
            outcome["result"] = waiter.run("w", wf, run_id="lw-1")
        except LeaseLost as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_until(lambda: listening_waiter(observer, "gate-lwaiter"), "the waiter to listen")
    db.execute("UPDATE tidebase.runs SET fencing_token = fencing_token + 1 WHERE id = 'lw-1'")  # a take-over
    thread.join(30)
    assert not thread.is_alive()
    assert set(outcome) == {"error"}
    waiter.close()
